"""Training f, g, h: config, batch sources, augmentation, the loop, the localiser, caches, data preparation."""
