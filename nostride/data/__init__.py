"""Datasets, augmentation and image reading for classification and detection."""

from .io import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    ImageTooLargeError,
    is_image_file,
    list_images,
    max_image_pixels,
    read_image_rgb,
    read_image_size,
    walk_image_files,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDecodeError",
    "ImageTooLargeError",
    "is_image_file",
    "list_images",
    "max_image_pixels",
    "read_image_rgb",
    "read_image_size",
    "walk_image_files",
    "write_image",
]
