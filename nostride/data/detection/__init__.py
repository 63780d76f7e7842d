"""Detection data: dataset YAML, YOLO / COCO labels, verification, label cache, validation loading.

The API, in the order a pipeline uses it::

    from nostride.data.detection import load_data_yaml, DetectionDataset, build_val_loader

    cfg = load_data_yaml("coco128/data.yaml")  # DetectionDataConfig
    cfg.names, cfg.nc, cfg.root                # class names, their count, the dataset root
    cfg.train, cfg.val, cfg.test               # each a list of resolved paths (folders, .txt, .json) or None

    ds = DetectionDataset(cfg.val, names=cfg.names)   # or DetectionDataset.from_yaml(path, "val")
    ds.im_files[i]       # Path of image i (sorted; unreadable images left out and counted)
    ds.shapes[i]         # original (h, w), int64, EXIF orientation applied
    ds.labels[i]         # float32 (n, 5) [cls, xc, yc, w, h] normalised to [0, 1], verified
    ds.stats             # DatasetStats: found, images, backgrounds, labels, skipped, duplicates, ...
    img, (h0, w0), (h, w) = ds.load_image(i, 640)    # uint8 (3, h, w), long side resized to 640

    loader = build_val_loader(ds, img_size=640, batch_size=32, stride=32)  # rect batches, pad 0.5
    for images, targets, paths, shapes in loader:
        ...  # images uint8 (B, 3, H, W); targets (N, 6) [i, cls, xc, yc, w, h] canvas-normalised;
             # shapes[i] = ((h0, w0), ((h / h0, w / w0), (pad_w, pad_h))) for scale_boxes

Modules: :mod:`.dataset_yaml` (YAML keys and path resolution), :mod:`.labels` (label files and the
verification rules), :mod:`.coco` (COCO json sources, the 80 -> 91 category map), :mod:`.cache`
(the ``.npz`` label cache), :mod:`.image` (loading at a long side, the interpolation used),
:mod:`.dataset` (:class:`DetectionDataset`), :mod:`.val_loader` (rectangular batches, collation,
distributed shards), :mod:`.letterbox` (letterbox and mapping boxes back).
"""

from .cache import user_cache_dir
from .coco import COCO80_TO_91, CocoJsonSource, coco80_to_91, read_coco_json
from .dataset import DatasetStats, DetectionDataset, list_split_images
from .dataset_yaml import DetectionDataConfig, load_data_yaml
from .image import load_image, resize_long_side
from .labels import LabelFile, check_classes, img2label_path, parse_label_file
from .letterbox import letterbox, scale_boxes
from .val_loader import LetterboxDataset, RectBatchSampler, build_val_loader, collate_detection, rect_batch_shapes

__all__ = [
    "COCO80_TO_91",
    "CocoJsonSource",
    "DatasetStats",
    "DetectionDataConfig",
    "DetectionDataset",
    "LabelFile",
    "LetterboxDataset",
    "RectBatchSampler",
    "build_val_loader",
    "check_classes",
    "coco80_to_91",
    "collate_detection",
    "img2label_path",
    "letterbox",
    "list_split_images",
    "load_data_yaml",
    "load_image",
    "parse_label_file",
    "read_coco_json",
    "rect_batch_shapes",
    "resize_long_side",
    "scale_boxes",
    "user_cache_dir",
]
