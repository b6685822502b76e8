"""What serves the course: one setup call per notebook with its identities, findings and exercise checks (lesson.py),
the answer key those checks compare with (answers.py), pictures and widgets (viz.py, widgets.py), the shipped
checkpoints (pretrained.py), tables of results (results.py), the student edition (student.py) and the whole-course
runner (runner.py)."""

from . import answers
from .lesson import Course, check_answer, setup
from .viz import attention_overlay, denoising_filmstrip, image_grid, latent_grid, save_figure, slerp

__all__ = ["answers", "Course", "check_answer", "setup", "attention_overlay", "denoising_filmstrip", "image_grid",
           "latent_grid", "save_figure", "slerp"]
