"""Networks: Attention U-Net and U-Net (2D/3D), their blocks, registry and model files."""

from attnseg.models.blocks import AttentionGate, ConvBlock, ConvNormAct, UpSample
from attnseg.models.checkpoint import load_model, read_model_file, save_model
from attnseg.models.registry import available_models, build_model, register_model
from attnseg.models.unet import AttentionUNet, UNet

__all__ = [
    "AttentionGate",
    "AttentionUNet",
    "ConvBlock",
    "ConvNormAct",
    "UNet",
    "UpSample",
    "available_models",
    "build_model",
    "load_model",
    "read_model_file",
    "register_model",
    "save_model",
]
