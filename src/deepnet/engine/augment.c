/* Data augmentation inside the image gather: each member's batch laid out as stack_forward's
 * input (P, C, H, W, N), images innermost, as kernels.c's gather_images/gather_pixels lay it
 * out, but each image of an augmenting member resampled through its own affine transform.
 *
 * affine (P, 6, N) holds, per image j of member p, the map from an output pixel (y, x) to
 * the source point sx = a0 x + a1 y + a2, sy = a3 x + a4 y + a5 (augment.py draws it). The
 * value there is bilinear in the four pixels around it, pixels outside the image counting 0.
 * An image is resampled a row at a time: first its columns' neighbours and weights, 16
 * columns a vector (GCC vector extensions, as in kernels.c), then each channel's row, a plain
 * loop that the compiler vectorises with gathers within the one image (AVX2 and AVX-512
 * alike). The member's resampled images go to scratch, and kernels.c's gather_images
 * transposes them into the images-innermost layout with whole vectors. Coordinates are clamped to [-2, side + 1] before they become integers (outside
 * the image either way) and neighbour indices to the image, so no transform reads outside
 * its image. uint8 pixels become k / 255 (a division: correctly rounded, as images_to_tensor
 * makes them), so uint8 and float32 sources give the same numbers.
 * Compiled with kernels.c into one library by deepnet/engine/kernels.py.
 */
#include <stdint.h>

/* kernels.c's plain gathers: members that do not augment take exactly those numbers. */
void gather_images(float *out, const float *x, const int64_t *index, int P, int HW, int N);
void gather_pixels(float *out, const uint8_t *x, const int64_t *index, int P, int HW, int N);

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64), aligned(4)));
#define STORE(ptr, v) (*(v16 *)(ptr) = (v))
#define STOREI(ptr, v) (*(v16i *)(ptr) = (v))
#define INLINE static inline __attribute__((always_inline))

INLINE v16 select(v16i mask, v16 a, v16 b) {
  return (v16)(((v16i)a & mask) | ((v16i)b & ~mask));
}

INLINE v16 clamp(v16 x, float low, float high) {
  x = select(x < (v16){} + low, (v16){} + low, x);
  return select(x > (v16){} + high, (v16){} + high, x);
}

/* Integers t clamped to [0, side). */
INLINE v16i inside(v16i t, int side) {
  t &= ~(t < 0);
  const v16i above = t >= side;
  return (t & ~above) | (((v16i){} + (side - 1)) & above);
}

/* One coordinate's two neighbours for 16 columns: clamped indices i0, i1 and weights w0,
 * w1, 0 for a neighbour outside [0, side). s is clamped to [-2, side + 1] first (outside
 * the image either way), so that its floor is a small integer. */
INLINE void neighbours(v16 s, int side, v16i *i0, v16i *i1, v16 *w0, v16 *w1) {
  s = clamp(s, -2.0f, (float)(side + 1));
  v16i t = __builtin_convertvector(s, v16i);        /* toward zero */
  t += (v16i)(__builtin_convertvector(t, v16) > s); /* -1 where that rounded up: the floor */
  const v16 f = s - __builtin_convertvector(t, v16);
  *w0 = select((t >= 0) & (t < side), 1.0f - f, (v16){});
  *w1 = select((t >= -1) & (t < side - 1), f, (v16){});
  *i0 = inside(t, side);
  *i1 = inside(t + 1, side);
}

/* Row y's source points of a[0..5], 16 columns at a time (W rounded up to them): for each
 * column its four neighbours' offsets q[0..3] (top left, top right, bottom left, bottom
 * right) in an (H, W) plane, and the weights of its two columns w[0], w[1] and its two rows
 * w[2], w[3]; each array holds W rounded up to 16. */
static void row_neighbours(const float *a, int y, int H, int W, int32_t *q, float *w) {
  const int Wp = (W + 15) / 16 * 16;
  const v16 lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int x0 = 0; x0 < W; x0 += 16) {
    const v16 x = lanes + (float)x0;
    v16i c0, c1, r0, r1;
    v16 wc0, wc1, wr0, wr1;
    neighbours(a[0] * x + a[1] * (float)y + a[2], W, &c0, &c1, &wc0, &wc1);
    neighbours(a[3] * x + a[4] * (float)y + a[5], H, &r0, &r1, &wr0, &wr1);
    STOREI(q + x0, r0 * W + c0);
    STOREI(q + Wp + x0, r0 * W + c1);
    STOREI(q + 2 * Wp + x0, r1 * W + c0);
    STOREI(q + 3 * Wp + x0, r1 * W + c1);
    STORE(w + x0, wc0);
    STORE(w + Wp + x0, wc1);
    STORE(w + 2 * Wp + x0, wr0);
    STORE(w + 3 * Wp + x0, wr1);
  }
}

/* Image src (C, H, W) resampled through a[0..5] into dst (C, H, W). q, w: 4 W ints and
 * floats (W rounded up to 16) of scratch for a row's neighbours and weights. */
static void resample(float *restrict dst, const float *restrict src, const float *a, int C,
                     int H, int W, int32_t *restrict q, float *restrict w) {
  const int64_t plane = (int64_t)H * W;
  const int Wp = (W + 15) / 16 * 16;
  const int32_t *q00 = q, *q01 = q + Wp, *q10 = q + 2 * Wp, *q11 = q + 3 * Wp;
  const float *wc0 = w, *wc1 = w + Wp, *wr0 = w + 2 * Wp, *wr1 = w + 3 * Wp;
  for (int y = 0; y < H; y++) {
    row_neighbours(a, y, H, W, q, w);
    for (int c = 0; c < C; c++) {
      const float *s = src + c * plane;
      float *d = dst + c * plane + (int64_t)y * W;
      for (int x = 0; x < W; x++) {
        const float top = wc0[x] * s[q00[x]] + wc1[x] * s[q01[x]];
        const float bottom = wc0[x] * s[q10[x]] + wc1[x] * s[q11[x]];
        d[x] = wr0[x] * top + wr1[x] * bottom;
      }
    }
  }
}

INLINE void gather_augmented_any(
    float *out, const void *x, const int64_t *index, const float *affine,
    const int32_t *augmented, float *scratch, int32_t *offsets, const int64_t *order, int P,
    int C, int H, int W, int N, const int bytes) {
  const int64_t image = (int64_t)C * H * W;
  float *resampled = scratch, *pixels = scratch + image * N, *weights = pixels + image;
  for (int p = 0; p < P; p++) {
    float *o = out + p * image * N;
    const int64_t *ix = index + (int64_t)p * N;
    if (!augmented[p]) {
      if (bytes) gather_pixels(o, (const uint8_t *)x, ix, 1, (int)image, N);
      else gather_images(o, (const float *)x, ix, 1, (int)image, N);
      continue;
    }
    for (int j = 0; j < N; j++) {
      const float *src = (const float *)x + ix[j] * image;
      if (bytes) {
        const uint8_t *k = (const uint8_t *)x + ix[j] * image;
        for (int64_t i = 0; i < image; i++) pixels[i] = (float)k[i] / 255.0f;
        src = pixels;
      }
      float a[6];
      for (int k = 0; k < 6; k++) a[k] = affine[((int64_t)p * 6 + k) * N + j];
      resample(resampled + j * image, src, a, C, H, W, offsets, weights);
    }
    gather_images(o, resampled, order, 1, (int)image, N);
  }
}

/* gather_images for members with augmented[p] = 0, the rest resampled through affine.
 * scratch: (N + 1) C H W + 4 W' floats, offsets: 4 W' ints (W' = W rounded up to 16);
 * order: 0 .. N - 1. */
void gather_augmented(float *out, const float *x, const int64_t *index, const float *affine,
                      const int32_t *augmented, float *scratch, int32_t *offsets,
                      const int64_t *order, int P, int C, int H, int W, int N) {
  gather_augmented_any(out, x, index, affine, augmented, scratch, offsets, order, P, C, H, W,
                       N, 0);
}

/* gather_augmented from uint8 pixels, scaled by 1/255 as gather_pixels scales them. */
void gather_augmented_pixels(float *out, const uint8_t *x, const int64_t *index,
                             const float *affine, const int32_t *augmented, float *scratch,
                             int32_t *offsets, const int64_t *order, int P, int C, int H, int W,
                             int N) {
  gather_augmented_any(out, x, index, affine, augmented, scratch, offsets, order, P, C, H, W,
                       N, 1);
}
