"""attnseg: Attention U-Net for medical image segmentation."""

__version__ = "0.1.0"

from attnseg.config import ModelConfig  # noqa: E402
from attnseg.errors import AttnsegError, ConfigError, DataError, ModelFileError  # noqa: E402
from attnseg.models import AttentionUNet, UNet, build_model, load_model, save_model  # noqa: E402

__all__ = [
    "AttentionUNet",
    "AttnsegError",
    "ConfigError",
    "DataError",
    "ModelConfig",
    "ModelFileError",
    "UNet",
    "__version__",
    "build_model",
    "load_model",
    "save_model",
]
