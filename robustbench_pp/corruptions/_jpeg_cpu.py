"""A JPEG round trip without the file: libjpeg-turbo's arithmetic, compiled (numba), bit for bit.

Encoding then decoding an image at quality q changes it by colour conversion, 4:2:0 chroma
subsampling, the 8×8 integer DCT, quantisation and their inverses; the entropy coding between
them is lossless and is skipped here. Every step follows libjpeg-turbo's default (and SIMD)
integer arithmetic, which Pillow, torchvision and OpenCV all use:

* RGB -> YCbCr with 16-bit fixed-point coefficients (jccolor.c), Cb/Cr rounded with 0.5 - 1/65536;
* h2v2 downsampling: the mean of 2×2 with the bias alternating 1, 2 along a row (jcsample.c);
* the "islow" forward DCT (jfdctint.c: 13-bit constants, 2 extra bits after the row pass);
* quantisation by multiplication with libjpeg-turbo's reciprocals (jcdctmgr.c compute_reciprocal);
* the "islow" inverse DCT (jidctint.c) with the output clamped to 0..255;
* "fancy" h2v2 upsampling, the triangle filter 3/4 · 1/4 per axis (jdsample.c);
* YCbCr -> RGB with the fixed-point tables of jdcolor.c.

Images whose sides are not multiples of 16 are padded as the encoder pads them: columns by
repeating the last pixel, rows by repeating the last pixel row up to an even count and then the
last row of each downsampled component; the upsampler treats the chroma's own last row and
column as the edge, as the decoder does. tests/test_corruptions.py compares the result with Pillow's files, byte for
byte, over qualities 1..100 and odd sizes. All arithmetic is int32 (libjpeg-turbo's SIMD code
uses 16- and 32-bit lanes too), laid out so that the loops run on vector registers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

i32 = np.int32

_LUMINANCE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
              14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMINANCE = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


@lru_cache(maxsize=128)
def tables(quality: int):
    """Per component (luma, chroma): quantiser, rounding correction, reciprocal, 2**-(shift + 16).

    jpeg_set_quality(quality, force_baseline=TRUE) scaling of the standard tables, then
    libjpeg-turbo's compute_reciprocal for the divisor 8·q (16-bit DCT elements).
    """
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    out = []
    for base in (_LUMINANCE, _CHROMINANCE):
        q = np.clip((np.asarray(base) * scale + 50) // 100, 1, 255)
        corr, recip, shift = np.empty(64, np.int32), np.empty(64, np.int32), np.empty(64, np.float64)
        for k, value in enumerate(q):
            divisor = int(value) * 8
            r = 16 + divisor.bit_length() - 1
            fq, fr = divmod(1 << r, divisor)
            c = divisor // 2
            if fr == 0:  # a power of two: the reciprocal needs one bit less
                fq, r = fq >> 1, r - 1
            elif fr <= divisor // 2:
                c += 1
            else:
                fq += 1
            corr[k], recip[k], shift[k] = c, fq, 2.0 ** -r
        out.extend([q.astype(np.int32), corr, recip, shift])
    return tuple(out)


# --------------------------------------------------------------------------- 8-point transforms


@njit(inline="always")
def _fdct(d0, d1, d2, d3, d4, d5, d6, d7, first_pass):
    t0 = i32(d0 + d7); t7 = i32(d0 - d7); t1 = i32(d1 + d6); t6 = i32(d1 - d6)
    t2 = i32(d2 + d5); t5 = i32(d2 - d5); t3 = i32(d3 + d4); t4 = i32(d3 - d4)
    t10 = i32(t0 + t3); t13 = i32(t0 - t3); t11 = i32(t1 + t2); t12 = i32(t1 - t2)
    if first_pass:  # rows: keep 2 extra bits
        o0 = i32(i32(t10 + t11) << 2); o4 = i32(i32(t10 - t11) << 2); s = 11
    else:  # columns: remove them
        o0 = i32(i32(t10 + t11 + 2) >> 2); o4 = i32(i32(t10 - t11 + 2) >> 2); s = 15
    h = i32(1 << (s - 1))
    z1 = i32(i32(t12 + t13) * 4433)
    o2 = i32(i32(z1 + i32(t13 * 6270) + h) >> s)
    o6 = i32(i32(z1 - i32(t12 * 15137) + h) >> s)
    z1 = i32(t4 + t7); z2 = i32(t5 + t6); z3 = i32(t4 + t6); z4 = i32(t5 + t7)
    z5 = i32(i32(z3 + z4) * 9633)
    t4 = i32(t4 * 2446); t5 = i32(t5 * 16819); t6 = i32(t6 * 25172); t7 = i32(t7 * 12299)
    z1 = i32(z1 * -7373); z2 = i32(z2 * -20995); z3 = i32(i32(z3 * -16069) + z5); z4 = i32(i32(z4 * -3196) + z5)
    o7 = i32(i32(t4 + z1 + z3 + h) >> s)
    o5 = i32(i32(t5 + z2 + z4 + h) >> s)
    o3 = i32(i32(t6 + z2 + z3 + h) >> s)
    o1 = i32(i32(t7 + z1 + z4 + h) >> s)
    return o0, o1, o2, o3, o4, o5, o6, o7


@njit(inline="always")
def _idct(c0, c1, c2, c3, c4, c5, c6, c7, s):
    h = i32(1 << (s - 1))
    z1 = i32(i32(c2 + c6) * 4433)
    t2 = i32(z1 - i32(c6 * 15137)); t3 = i32(z1 + i32(c2 * 6270))
    t0 = i32(i32(c0 + c4) << 13); t1 = i32(i32(c0 - c4) << 13)
    t10 = i32(t0 + t3); t13 = i32(t0 - t3); t11 = i32(t1 + t2); t12 = i32(t1 - t2)
    z1 = i32(c7 + c1); z2 = i32(c5 + c3); z3 = i32(c7 + c3); z4 = i32(c5 + c1)
    z5 = i32(i32(z3 + z4) * 9633)
    a0 = i32(c7 * 2446); a1 = i32(c5 * 16819); a2 = i32(c3 * 25172); a3 = i32(c1 * 12299)
    z1 = i32(z1 * -7373); z2 = i32(z2 * -20995); z3 = i32(i32(z3 * -16069) + z5); z4 = i32(i32(z4 * -3196) + z5)
    a0 = i32(a0 + z1 + z3); a1 = i32(a1 + z2 + z4); a2 = i32(a2 + z2 + z3); a3 = i32(a3 + z1 + z4)
    return (i32(i32(t10 + a3 + h) >> s), i32(i32(t11 + a2 + h) >> s), i32(i32(t12 + a1 + h) >> s),
            i32(i32(t13 + a0 + h) >> s), i32(i32(t13 - a0 + h) >> s), i32(i32(t12 - a1 + h) >> s),
            i32(i32(t11 - a2 + h) >> s), i32(i32(t10 - a3 + h) >> s))


# Blocks are stored as 8 × 8 planes of their values, block index last: X[a, b, block]. A pass
# over one index reads X[0..7, i] and writes Y[0..7, i], every loop running along the blocks
# (this layout vectorises; writing X[i, 0..7] from a loop over blocks did not).


@njit(cache=True, nogil=True)
def _forward_rows(X, Y):  # X[column][row] samples -> Y[u][row]
    for i in range(8):
        x0 = X[0, i]; x1 = X[1, i]; x2 = X[2, i]; x3 = X[3, i]; x4 = X[4, i]; x5 = X[5, i]; x6 = X[6, i]; x7 = X[7, i]
        y0 = Y[0, i]; y1 = Y[1, i]; y2 = Y[2, i]; y3 = Y[3, i]; y4 = Y[4, i]; y5 = Y[5, i]; y6 = Y[6, i]; y7 = Y[7, i]
        for b in range(X.shape[2]):
            o = _fdct(x0[b], x1[b], x2[b], x3[b], x4[b], x5[b], x6[b], x7[b], True)
            y0[b] = o[0]; y1[b] = o[1]; y2[b] = o[2]; y3[b] = o[3]; y4[b] = o[4]; y5[b] = o[5]; y6[b] = o[6]; y7[b] = o[7]


@njit(cache=True, nogil=True)
def _forward_columns(X, Y):  # X[u][row] -> Y[v][u] coefficients
    for i in range(8):
        x0 = X[i, 0]; x1 = X[i, 1]; x2 = X[i, 2]; x3 = X[i, 3]; x4 = X[i, 4]; x5 = X[i, 5]; x6 = X[i, 6]; x7 = X[i, 7]
        y0 = Y[0, i]; y1 = Y[1, i]; y2 = Y[2, i]; y3 = Y[3, i]; y4 = Y[4, i]; y5 = Y[5, i]; y6 = Y[6, i]; y7 = Y[7, i]
        for b in range(X.shape[2]):
            o = _fdct(x0[b], x1[b], x2[b], x3[b], x4[b], x5[b], x6[b], x7[b], False)
            y0[b] = o[0]; y1[b] = o[1]; y2[b] = o[2]; y3[b] = o[3]; y4[b] = o[4]; y5[b] = o[5]; y6[b] = o[6]; y7[b] = o[7]


@njit(cache=True, nogil=True)
def _quantize(X, q, corr, recip, shift):  # X[v][u]: quantised and dequantised in place
    for v in range(8):
        for u in range(8):
            x = X[v, u]
            k = v * 8 + u
            step, c, r, s = q[k], np.float64(corr[k]), np.float64(recip[k]), shift[k]
            for b in range(X.shape[2]):
                t = x[b]
                level = i32(np.floor((np.float64(abs(t)) + c) * r * s))  # < 2**32 before the shift: exact
                x[b] = i32((level if t >= 0 else -level) * step)


@njit(cache=True, nogil=True)
def _inverse_columns(X, Y):  # X[v][u] -> Y[row][u]
    for i in range(8):
        x0 = X[0, i]; x1 = X[1, i]; x2 = X[2, i]; x3 = X[3, i]; x4 = X[4, i]; x5 = X[5, i]; x6 = X[6, i]; x7 = X[7, i]
        y0 = Y[0, i]; y1 = Y[1, i]; y2 = Y[2, i]; y3 = Y[3, i]; y4 = Y[4, i]; y5 = Y[5, i]; y6 = Y[6, i]; y7 = Y[7, i]
        for b in range(X.shape[2]):
            o = _idct(x0[b], x1[b], x2[b], x3[b], x4[b], x5[b], x6[b], x7[b], 11)
            y0[b] = o[0]; y1[b] = o[1]; y2[b] = o[2]; y3[b] = o[3]; y4[b] = o[4]; y5[b] = o[5]; y6[b] = o[6]; y7[b] = o[7]


@njit(inline="always")
def _sample(value):
    return min(max(i32(value + 128), i32(0)), i32(255))


@njit(cache=True, nogil=True)
def _inverse_rows(X, Y):  # X[row][u] -> Y[column][row] samples 0..255
    for i in range(8):
        x0 = X[i, 0]; x1 = X[i, 1]; x2 = X[i, 2]; x3 = X[i, 3]; x4 = X[i, 4]; x5 = X[i, 5]; x6 = X[i, 6]; x7 = X[i, 7]
        y0 = Y[0, i]; y1 = Y[1, i]; y2 = Y[2, i]; y3 = Y[3, i]; y4 = Y[4, i]; y5 = Y[5, i]; y6 = Y[6, i]; y7 = Y[7, i]
        for b in range(X.shape[2]):
            o = _idct(x0[b], x1[b], x2[b], x3[b], x4[b], x5[b], x6[b], x7[b], 18)
            y0[b] = _sample(o[0]); y1[b] = _sample(o[1]); y2[b] = _sample(o[2]); y3[b] = _sample(o[3])
            y4[b] = _sample(o[4]); y5[b] = _sample(o[5]); y6[b] = _sample(o[6]); y7[b] = _sample(o[7])


@njit(cache=True, nogil=True)
def _round_trip_plane(P, A, B, q, corr, recip, shift):
    """One component plane (H×W int32 samples, sides multiples of 8) through DCT and back, in place."""
    h, w = P.shape
    per_row = w // 8
    for block_row in range(h // 8):
        for r in range(8):
            line = P[8 * block_row + r]
            for c in range(8):
                dst = A[c, r]
                for k in range(per_row):
                    dst[block_row * per_row + k] = line[8 * k + c] - 128
    _forward_rows(A, B)
    _forward_columns(B, A)
    _quantize(A, q, corr, recip, shift)
    _inverse_columns(A, B)
    _inverse_rows(B, A)
    for block_row in range(h // 8):
        for r in range(8):
            line = P[8 * block_row + r]
            for c in range(8):
                src = A[c, r]
                for k in range(per_row):
                    line[8 * k + c] = src[block_row * per_row + k]


# --------------------------------------------------------------------------- colour and sampling


@njit(cache=True, nogil=True)
def _to_ycc(image, Y, Cb, Cr):
    for i in range(Y.shape[0]):
        red, green, blue, y, cb, cr = image[0, i], image[1, i], image[2, i], Y[i], Cb[i], Cr[i]
        for j in range(Y.shape[1]):
            r, g, b = i32(red[j]), i32(green[j]), i32(blue[j])
            y[j] = i32(i32(19595 * r + 38470 * g + 7471 * b + 32768) >> 16)
            cb[j] = i32(i32(-11059 * r - 21709 * g + 32768 * b + 8421375) >> 16)
            cr[j] = i32(i32(32768 * r - 27439 * g - 5329 * b + 8421375) >> 16)


@njit(cache=True, nogil=True)
def _downsample(C, S):
    for i in range(S.shape[0]):
        top, bottom, out = C[2 * i], C[2 * i + 1], S[i]
        for j in range(S.shape[1]):
            out[j] = i32(i32(top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1] + 1 + (j & 1)) >> 2)


@njit(cache=True, nogil=True)
def _upsample(S, rows, cols, U):
    """Fancy h2v2 upsampling of the first rows × cols chroma samples (their last row/column is the edge)."""
    for i in range(rows):
        for v in range(2):
            near, far, out = S[i], S[max(i - 1, 0) if v == 0 else min(i + 1, rows - 1)], U[2 * i + v]
            out[0] = i32(i32((near[0] * 3 + far[0]) * 4 + 8) >> 4)
            for j in range(cols - 1):
                this = i32(near[j] * 3 + far[j])
                after = i32(near[j + 1] * 3 + far[j + 1])
                out[2 * j + 1] = i32(i32(this * 3 + after + 7) >> 4)
                out[2 * j + 2] = i32(i32(after * 3 + this + 8) >> 4)
            out[2 * cols - 1] = i32(i32((near[cols - 1] * 3 + far[cols - 1]) * 4 + 7) >> 4)


@njit(inline="always")
def _byte(value):
    return np.uint8(min(max(value, i32(0)), i32(255)))


@njit(cache=True, nogil=True)
def _to_rgb(Y, Ub, Ur, out):
    for i in range(out.shape[1]):
        y, ub, ur, red, green, blue = Y[i], Ub[i], Ur[i], out[0, i], out[1, i], out[2, i]
        for j in range(out.shape[2]):
            cb, cr = i32(ub[j] - 128), i32(ur[j] - 128)
            red[j] = _byte(i32(y[j] + i32(i32(91881 * cr + 32768) >> 16)))
            green[j] = _byte(i32(y[j] + i32(i32(-22554 * cb - 46802 * cr + 32768) >> 16)))
            blue[j] = _byte(i32(y[j] + i32(i32(116130 * cb + 32768) >> 16)))


@njit(cache=True, nogil=True)
def _round_trip(padded, height, width, out, qy, cy, ry, sy, qc, cc, rc, sc):
    """padded: N×3×H'×W' uint8 (H', W' multiples of 16, edge-padded); out: N×3×height×width."""
    n, _, h, w = padded.shape
    Y, Cb, Cr = np.empty((h, w), np.int32), np.empty((h, w), np.int32), np.empty((h, w), np.int32)
    Sb, Sr = np.empty((h // 2, w // 2), np.int32), np.empty((h // 2, w // 2), np.int32)
    AY, BY = np.empty((8, 8, h * w // 64), np.int32), np.empty((8, 8, h * w // 64), np.int32)
    AC, BC = np.empty((8, 8, h * w // 256), np.int32), np.empty((8, 8, h * w // 256), np.int32)
    Ub, Ur = np.empty((h, w), np.int32), np.empty((h, w), np.int32)
    chroma_rows, chroma_cols = (height + 1) // 2, (width + 1) // 2
    for m in range(n):
        _to_ycc(padded[m], Y, Cb, Cr)
        _downsample(Cb, Sb)
        _downsample(Cr, Sr)
        for i in range(chroma_rows, h // 2):  # below the image, the encoder repeats the last chroma row
            Sb[i] = Sb[chroma_rows - 1]
            Sr[i] = Sr[chroma_rows - 1]
        _round_trip_plane(Y, AY, BY, qy, cy, ry, sy)
        _round_trip_plane(Sb, AC, BC, qc, cc, rc, sc)
        _round_trip_plane(Sr, AC, BC, qc, cc, rc, sc)
        _upsample(Sb, chroma_rows, chroma_cols, Ub)
        _upsample(Sr, chroma_rows, chroma_cols, Ur)
        _to_rgb(Y, Ub, Ur, out[m])


def round_trip(images: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-encode and decode a uint8 N×3×H×W batch at ``quality`` (4:2:0): a new array."""
    n, _, h, w = images.shape
    pad_h, pad_w = -h % 16, -w % 16
    padded = np.ascontiguousarray(images)
    if pad_h or pad_w:
        padded = np.pad(padded, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    out = np.empty((n, 3, h, w), np.uint8)
    _round_trip(padded, h, w, out, *tables(quality))
    return out
