"""Data: archive layout, image readers, preprocessing cache, splits, augmentation."""
