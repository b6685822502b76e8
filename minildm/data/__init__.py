"""The data: the Shapes world (shapes.py: scenes, captions, the tokenizer's vocabulary) and the datasets that
feed training (datasets.py: Shapes, a folder of images, and torchvision's MNIST / Fashion-MNIST)."""

from .datasets import DATASETS, MNIST, DataConfig, ImageFolderDataset, ShapesDataset, make_dataset
from .shapes import (NUM_CLASSES, ShapesTokenizer, class_id, class_name, parse_caption, parse_layout, render_scenes,
                     sample_scene, scene_from_caption)

__all__ = ["DATASETS", "DataConfig", "ShapesDataset", "make_dataset", "MNIST", "ImageFolderDataset", "NUM_CLASSES",
           "ShapesTokenizer", "class_id", "class_name", "parse_caption", "parse_layout", "render_scenes",
           "sample_scene", "scene_from_caption"]
