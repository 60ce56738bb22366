"""The corruption engine: 19 corruptions × 5 severities × 2 parameter presets (and "pushpull-224",
the imagenet rows with the PushPull-Net code's elastic scale), batched in torch.

    >>> from robustbench_pp.corruptions import corrupt, PRESETS, corruption_parameters
    >>> out = corrupt(images, "snow", 3, preset="cifar", seed=0, index_offset=0)

``images`` is a uint8 batch (numpy N×H×W×3 or torch N×3×H×W on any device); the result has
the same type, shape, dtype and device. ``corrupt_by_index(images, indices, ...)`` corrupts a
batch of any global indices (a subset, a shuffled batch) as one full pass would. Kernels
live in ``kernels.py`` (one function per corruption), their parameter rows in
``parameters.py`` (data keyed by preset), shared building blocks in ``_ops.py``. ``backend="imagecorruptions"`` runs the reference package.

On the CPU the kernels' per-pixel work runs as compiled loops (numba: ``_cpu.py``, the JPEG
pipeline ``_jpeg_cpu.py``, the generator stream ``_mt19937.py``); other devices run the torch
kernels. The two give the same bytes (tests/test_corruptions.py), except defocus, zoom and
elastic blur, whose compiled resampling rounds a rare value one grey level apart.
``ENGINE_VERSION`` (recorded in manifests) changes whenever any output can.

What we follow: the maintained ``imagecorruptions`` package (its numpy motion blur and snow,
its image-size adaptations) except where it departs from the released data, where we follow
the released data (../shared/spec/protocol.md §1). Float results are clipped to [0, 255] and
truncated to uint8 as ``np.uint8`` did for the released data.

Departures from the reference package (``imagecorruptions``):

* All: randomness comes from one torch.Generator per image seeded by a hash of (seed, name,
  severity, global index), not from numpy's global RNG: statistics match, bytes do not. On
  the CPU raw draws are made from the generator's state in compiled code (the same stream).
  Arithmetic is float32 (the reference mixes float32 and float64). A slack of 1e-3 grey
  level before truncation keeps float32 results meant to be whole grey levels whole.
* cifar preset: the package has none; its rows are the CIFAR-10-C parameters of the spec
  (fog's plasma map 32 px, frost texture ×0.2, elastic sizes × 32).
* elastic_transform: the original (released-data) version with its random affine stage and
  α, σ, affine jitter = 244 × (row) px for imagenet and 32 × (row) px for cifar; the package's
  re-parameterised version without the affine stage is far milder.
* pixelate: box filter down and box filter up (Pillow BOX both ways) as the released data;
  the package upsamples with nearest. Pillow's own 22-bit fixed-point arithmetic, byte for
  byte (a compiled loop on CPU, exact float64 matrix products elsewhere).
* frost: one of the first five textures (the package also draws the sixth), cropped at full
  size for imagenet (the package enlarges every texture ×1.1 first) and after ×0.2 bilinear
  resizing for cifar; a texture is enlarged (bicubic, ×1.1 margin) only when the image is
  larger than it.
* fog: the plasma map is the preset's size (256 imagenet, 32 cifar) or the next power of two
  of the longest side if that is larger; the package always uses the latter.
* glass_blur: the reference's sequential "swap" aliases numpy views and so copies
  x[h', w'] into x[h, w]; we reproduce that sequential result exactly (copy chains resolved
  in parallel), with torch's draws instead of numba's.
* spatter (water): OpenCV's pipeline rebuilt in torch: Canny (3×3 Sobel, L1 magnitude,
  non-maximum suppression, hysteresis; edge maps identical on the liquid layers we compared),
  distance to the edges (exact Euclidean, where OpenCV's DIST_L2 uses a 5×5 mask
  approximation), 3×3 box blurs, histogram equalisation, emboss, with the same uint8 steps.
* shot_noise: exact inversion of tabulated Poisson CDFs (one float64 uniform per value; the
  input has only 256 grey levels, so 256 rates) instead of numpy's Poisson sampler.
* impulse_noise: one uniform per value (u < amount flips, u < amount/2 salts) where skimage
  draws two; the same distribution.
* jpeg_compression: on CPU libjpeg-turbo's integer pipeline without the file (colour
  conversion, 4:2:0 sampling, islow DCT, quantisation and back: Pillow's bytes, entropy coding
  skipped as lossless); nvJPEG through torchvision on CUDA.
* defocus_blur: on CPU the disk as integer sums over its rows, then the aliasing Gaussian,
  plus the few taps where OpenCV's blur inside the kernel's frame differs; elsewhere one FFT.
* elastic's affine warp samples with torch's bilinear weights, OpenCV quantises them to 1/32.
* Images of 16 px and more are accepted (the package rejects images under 32 px).

Severities that do not get harder, reproduced rather than fixed (mean PSNR over photographs,
tests/test_corruptions_fidelity.py): cifar elastic_transform (rises), glass_blur, frost,
spatter, saturate (spec), motion_blur 3→4 (same σ, radius 6→8 adds taps of weight < 0.3 %),
pixelate 2→3 (28 then 27 px); imagenet glass_blur 1→2 (the package too), frost 3→4,
saturate, elastic_transform 2→3 (affine jitter 0.2 → 0.02 × 244 px); imagenet fog 3→4 falls
by only 0.12 dB (256 photographs, ours and the package alike).
"""

from robustbench_pp.corruptions.engine import BACKENDS, ENGINE_VERSION, corrupt, corrupt_by_index, reference_corrupt
from robustbench_pp.corruptions.jpeg import jpeg_roundtrip
from robustbench_pp.corruptions.parameters import PARAMETERS, PRESETS, corruption_parameters

__all__ = [
    "BACKENDS",
    "ENGINE_VERSION",
    "PARAMETERS",
    "PRESETS",
    "corrupt",
    "corrupt_by_index",
    "corruption_parameters",
    "jpeg_roundtrip",
    "reference_corrupt",
]
