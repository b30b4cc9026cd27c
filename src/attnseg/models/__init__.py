"""Networks: Attention U-Net and U-Net (2D/3D), their blocks, registry and model files."""

from attnseg.models.blocks import AttentionGate, ConvBlock, ConvNormAct, UpSample
from attnseg.models.card import ModelCard, read_model_card, training_card
from attnseg.models.ensemble import EnsembleModel
from attnseg.models.model_file import load_model, model_from_payload, read_model_file, save_model
from attnseg.models.registry import available_models, build_model, register_model
from attnseg.models.transfer import TransferReport, transfer_weights
from attnseg.models.unet import AttentionUNet, UNet

__all__ = [
    "AttentionGate",
    "AttentionUNet",
    "ConvBlock",
    "ConvNormAct",
    "EnsembleModel",
    "ModelCard",
    "TransferReport",
    "UNet",
    "UpSample",
    "available_models",
    "build_model",
    "load_model",
    "model_from_payload",
    "read_model_card",
    "read_model_file",
    "register_model",
    "save_model",
    "training_card",
    "transfer_weights",
]
