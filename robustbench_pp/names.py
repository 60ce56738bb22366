"""The corruption names, their groups and the canonical order, and the evaluation protocols: defined here once.

Every other module imports these; nothing else spells the list out.
"""

from __future__ import annotations

from types import MappingProxyType

#: The 15 benchmark corruptions, in the canonical order of tables and plots.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)

#: The 4 extra ("validation") corruptions: generated and reported, never part of mCE.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

#: All 19, benchmark ones first.
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS

#: Group name -> the benchmark corruptions in it (canonical order).
CORRUPTION_GROUPS: MappingProxyType = MappingProxyType(
    {
        "noise": CORRUPTIONS[0:3],
        "blur": CORRUPTIONS[3:7],
        "weather": CORRUPTIONS[7:10],
        "digital": CORRUPTIONS[10:15],
    }
)

#: Severities run 1..5.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: The name and severity of the clean (uncorrupted) cell in result records.
CLEAN = "clean"
CLEAN_SEVERITY = 0

#: Evaluation protocols: how the clean cell of an ImageNet set is framed. "imagenet-c" uses the
#: corrupted images' own framing, Resize(256) -> CenterCrop(224); "pushpull-net" the PushPull-Net
#: code's clean evaluation, Resize(224) -> CenterCrop(224) (its published E and R_net).
PROTOCOLS: tuple[str, ...] = ("imagenet-c", "pushpull-net")
#: The protocol of runs that do not name one (every run made before protocols existed).
DEFAULT_PROTOCOL = "imagenet-c"


def group_of(corruption: str) -> str:
    """Return the group ("noise", "blur", "weather", "digital" or "extra") of a corruption.

    Raises:
        ValueError: for an unknown name.
    """
    for group, names in CORRUPTION_GROUPS.items():
        if corruption in names:
            return group
    if corruption in EXTRA_CORRUPTIONS:
        return "extra"
    raise ValueError(f"unknown corruption {corruption!r}; expected one of {', '.join(ALL_CORRUPTIONS)}")
