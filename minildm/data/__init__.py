"""The data: the Shapes world (shapes.py: scenes, captions, the tokenizer's vocabulary) and the datasets that
feed training (datasets.py: Shapes, and real images from a folder or torchvision's MNIST / Fashion-MNIST)."""

from .datasets import DATASETS, DataConfig, ShapesDataset, make_dataset
from .realdata import MNIST, ImageFolderDataset
from .shapes import (
                     NUM_CLASSES,
                     ShapesTokenizer,
                     class_id,
                     class_name,
                     parse_caption,
                     parse_layout,
                     render_scenes,
                     sample_scene,
                     scene_from_caption,
)

__all__ = ["DATASETS", "DataConfig", "ShapesDataset", "make_dataset", "MNIST", "ImageFolderDataset", "NUM_CLASSES",
           "ShapesTokenizer", "class_id", "class_name", "parse_caption", "parse_layout", "render_scenes",
           "sample_scene", "scene_from_caption"]
