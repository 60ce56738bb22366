"""Model zoo: PushPull-Conv, the ResNet/AlexNet registry with metadata cards, safe checkpoints,
and models from elsewhere (your own ``nn.Module``, torchvision, timm, entry points: ``external``).

Public API::

    from robustbench_pp.models import (PushPullConv2d, register_model, create_model, list_models,
                                       get_card, ModelCard, load_checkpoint, file_sha256)

Each builder module registers its models where they are defined (``@register_model``); the
imports of ``alexnet`` and ``resnet`` below are what registers the built-in models, so any
import under ``robustbench_pp.models`` sees the full registry. A new builder module is added
to that import line.
"""

from robustbench_pp.models import alexnet, resnet  # noqa: F401  (registers the built-in models)
from robustbench_pp.models.checkpoints import LoadedCheckpoint, file_sha256, load_checkpoint, save_checkpoint
from robustbench_pp.models.original import map_lightning_checkpoint
from robustbench_pp.models.weights import CheckpointError, load_weights
from robustbench_pp.models.factory import create_model
from robustbench_pp.models.pushpull import PushPullConv2d, pull_kernel
from robustbench_pp.models.registry import (
    INHIBITION_MODES,
    ModelCard,
    build_from_card,
    get_card,
    list_models,
    register_model,
)

__all__ = [
    "CheckpointError",
    "INHIBITION_MODES",
    "LoadedCheckpoint",
    "ModelCard",
    "PushPullConv2d",
    "build_from_card",
    "create_model",
    "file_sha256",
    "get_card",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "map_lightning_checkpoint",
    "pull_kernel",
    "register_model",
    "save_checkpoint",
]
