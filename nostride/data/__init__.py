"""Datasets, augmentation and image reading for classification and detection."""

from .io import IMAGE_EXTENSIONS, ImageDecodeError, is_image_file, list_images, read_image_rgb, write_image

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "is_image_file", "list_images", "read_image_rgb", "write_image"]
