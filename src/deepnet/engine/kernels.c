/* The seed network's convolution stack for a population: direct 3x3 "valid" convolutions,
 * activations and 2x2 max pooling, forward and backward (stack_forward, stack_backward), and
 * the same with a batch norm after each convolution (norm_stack_forward, norm_stack_backward).
 * Each runs one conv-conv-pool block; deeper networks chain them.
 *
 * Layout: images innermost. A feature map is (P, C, H, W, N): member, channel, row, column,
 * image; N is a multiple of 16 so that each (p, c, y, x) holds whole 16-float vectors.
 * A weight is (P, Co, Ci, 3, 3) and a bias (P, Co), as torch stores them per member.
 * Every loop keeps a block of channels in vector registers and streams the images, which
 * is what makes these faster than grouped convolutions with 4-16 channels per group. Any
 * channel count (grey or colour images, any filter count) and any map size work at the same
 * speed: channels run in blocks of a compile-time size (BY_BLOCK), and no loop depends on
 * the height or width beyond its bounds. Loops run row by row outside the channel blocks,
 * so that the blocks share the rows they read while those are in cache.
 * Fusions save whole passes over memory: elementwise activations run inside the loops
 * that produce their inputs (derivatives inside the gradient loops), the second
 * convolution is pooled as it is computed, and the stack runs a member at a time with
 * its maps in scratch space that stays in cache; the backward pass reads the maps the
 * forward pass kept where the caller gives room for them (maps), else recomputes them.
 * A member's work can be shared by a team of threads (one call per thread, each with its
 * rank): each pass splits its channels at multiples of BLOCK, so every channel block, and so
 * every sum, is the one a single thread computes, and the team waits at a barrier wherever a
 * pass reads channels another thread wrote. The result is the same bit for bit on any team.
 * Built for a CPU with AVX512_BF16, the stacks can take their convolutions' products from bf16
 * operands with float32 sums (their bf16 argument; the "bf16 products" section).
 * Compiled at first use by deepnet/engine/kernels.py.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#ifdef __AVX512F__
#include <immintrin.h> /* the gather's byte loads, and the bf16 products */
#endif
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define HAS_BF16 1
#else
#define HAS_BF16 0
#endif

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64), aligned(4)));
#define LOAD(ptr) (*(const v16 *)(ptr))
#define LOADI(ptr) (*(const v16i *)(ptr))
#define STORE(ptr, v) (*(v16 *)(ptr) = (v))
#define STOREI(ptr, v) (*(v16i *)(ptr) = (v))
#define BLOCK 8
#define INLINE static inline __attribute__((always_inline))

/* Activation codes (kernels.py's ACTIVATION_CODES). Each elementwise activation runs inside
 * the loop that produced its input, and its derivative is computed from its output a.
 * SOFTMAX mixes the channels of a pixel: the stack functions run it as passes of its own. */
enum { LINEAR, RELU, TANH, SIGMOID, HARD_SIGMOID, SOFTSIGN, SOFTPLUS, SOFTMAX };

INLINE v16 blend(v16i mask, v16 a, v16 b) {
  return (v16)(((v16i)a & mask) | ((v16i)b & ~mask));
}

INLINE v16 clamp(v16 x, float low, float high) {
  x = blend(x < (v16){} + low, (v16){} + low, x);
  return blend(x > (v16){} + high, (v16){} + high, x);
}

/* exp(x) to about 1 ulp (Cephes' expf): 2^n * e^r with |r| <= ln(2)/2 */
INLINE v16 exp16(v16 x) {
  x = clamp(x, -87.3f, 88.7f);
  const v16 t = x * 1.44269504088896341f;
  const v16i n = __builtin_convertvector(t + blend(t < (v16){}, (v16){} - 0.5f, (v16){} + 0.5f), v16i);
  const v16 f = __builtin_convertvector(n, v16);
  const v16 r = x - f * 0.693359375f + f * 2.12194440e-4f;
  v16 y = 1.9875691500e-4f * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  return (v16)((v16i)y + (n << 23));
}

/* tanh(x) (Cephes' tanhf): an odd polynomial below |x| = 0.625, 1 - 2 / (e^2|x| + 1) above */
INLINE v16 tanh16(v16 x) {
  const v16 z = x * x;
  v16 small = -5.70498872745e-3f * z + 2.06390887954e-2f;
  small = small * z - 5.37397155531e-2f;
  small = small * z + 1.33314422036e-1f;
  small = small * z - 3.33332819422e-1f;
  small = small * z * x + x;
  const v16i negative = x < (v16){};
  const v16 magnitude = blend(negative, -x, x);
  v16 large = 1.0f - 2.0f / (exp16(magnitude + magnitude) + 1.0f);
  large = blend(negative, -large, large);
  return blend(magnitude < (v16){} + 0.625f, small, large);
}

/* log(x) for x > 0 (Cephes' logf): x = m * 2^e with m in [sqrt(1/2), sqrt(2)) */
INLINE v16 log16(v16 x) {
  v16i bits = (v16i)x;
  v16i e = ((bits >> 23) & 0xff) - 126;
  v16 m = (v16)((bits & 0x807fffff) | 0x3f000000); /* in [0.5, 1) */
  const v16i low = m < (v16){} + 0.707106781186547524f;
  e -= low & 1;
  m = blend(low, m + m, m) - 1.0f;
  const v16 z = m * m;
  v16 y = 7.0376836292e-2f * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  const v16 f = __builtin_convertvector(e, v16);
  y = y * m * z + f * -2.12194440e-4f - 0.5f * z;
  return m + y + f * 0.693359375f;
}

/* log(1 + u) for u >= 0, accurate for small u: log(w) * u / (w - 1) with w = 1 + u */
INLINE v16 log1p16(v16 u) {
  const v16 w = u + 1.0f;
  const v16i exact = w == (v16){} + 1.0f;
  return blend(exact, u, log16(w) * (u / blend(exact, (v16){} + 1.0f, w - 1.0f)));
}

/* softplus as torch computes it: log(1 + e^x), and x itself above 20 */
INLINE v16 softplus16(v16 x) {
  return blend(x > (v16){} + 20.0f, x, log1p16(exp16(x)));
}

INLINE v16 activate(int act, v16 x) {
  const v16 zero = {}, one = zero + 1.0f;
  switch (act) {
    case RELU: return blend(x > zero, x, zero);
    case TANH: return tanh16(x);
    case SIGMOID: return one / (one + exp16(-x));
    case HARD_SIGMOID: return clamp(0.2f * x + 0.5f, 0.0f, 1.0f);
    case SOFTSIGN: return x / (one + blend(x < zero, -x, x));
    case SOFTPLUS: return softplus16(x);
    default: return x;
  }
}

INLINE v16 derivative(int act, v16 a) {
  const v16 zero = {}, one = zero + 1.0f;
  switch (act) {
    case RELU: return blend(a > zero, one, zero);
    case TANH: return one - a * a;
    case SIGMOID: return a * (one - a);
    case HARD_SIGMOID: return blend((a > zero) & (a < one), zero + 0.2f, zero);
    case SOFTSIGN: {
      const v16 r = one - blend(a < zero, -a, a);
      return r * r;
    }
    case SOFTPLUS: /* sigmoid(x) = 1 - e^-a; a Taylor series where that would cancel */
      return blend(a < zero + 0.01f, a * (one - a * (0.5f - a * (1.0f / 6.0f))), one - exp16(-a));
    default: return one;
  }
}

/* Calls name(..., act) with act a compile-time constant, so that the loops inline it: worth
 * its code where an activation runs every few FMAs (the first convolution's outputs); where a
 * sum of dozens of products is activated, a runtime switch costs nothing measurable. */
#define DISPATCH(act, name, ...)                              \
  switch (act) {                                              \
    case RELU: name(__VA_ARGS__, RELU); break;                \
    case TANH: name(__VA_ARGS__, TANH); break;                \
    case SIGMOID: name(__VA_ARGS__, SIGMOID); break;          \
    case HARD_SIGMOID: name(__VA_ARGS__, HARD_SIGMOID); break; \
    case SOFTSIGN: name(__VA_ARGS__, SOFTSIGN); break;        \
    case SOFTPLUS: name(__VA_ARGS__, SOFTPLUS); break;        \
    default: name(__VA_ARGS__, LINEAR);                       \
  }

/* The largest block of channels, a power of two up to most, that fits in left: loops over
 * a block's channels must have a compile-time count (BY_BLOCK), or the compiler keeps the
 * accumulators in memory rather than in registers. */
INLINE int block_of(int left, int most) {
  int cb = most;
  while (cb > left) cb /= 2;
  return cb;
}

/* Calls name(..., cb) with cb (a block_of(left, most), most 8, 4 or 2) a compile-time
 * constant; a case above most never runs (it calls name with most, a valid block). */
#define CAP(cb, most) ((cb) < (most) ? (cb) : (most))
#define BY_BLOCK(cb, most, name, ...)                   \
  switch (cb) {                                         \
    case 8: name(__VA_ARGS__, CAP(8, most)); break;     \
    case 4: name(__VA_ARGS__, CAP(4, most)); break;     \
    case 2: name(__VA_ARGS__, CAP(2, most)); break;     \
    default: name(__VA_ARGS__, 1);                      \
  }

/* A team sharing one call's members: the threads wait for each other at its barrier. */
typedef struct {
  pthread_barrier_t barrier;
  int size;
} Team;

/* The bytes of a Team, which kernels.py allocates (one per team call). */
int team_bytes(void) { return (int)sizeof(Team); }

/* Makes team a team of size threads; 0 on success. */
int team_init(Team *team, int size) {
  team->size = size;
  return pthread_barrier_init(&team->barrier, NULL, (unsigned)size);
}

void team_destroy(Team *team) { pthread_barrier_destroy(&team->barrier); }

/* Where a thread stands in its team: team NULL is a thread alone (rank 0 of 1). */
typedef struct {
  int rank, size;
  Team *team;
} Share;

INLINE Share share_of(int rank, Team *team) {
  return team ? (Share){rank, team->size, team} : (Share){0, 1, NULL};
}

/* Waits until every thread of the team has come here. */
INLINE void team_wait(Share s) {
  if (s.size > 1) pthread_barrier_wait(&s.team->barrier);
}

/* A range of channels [lo, hi): a thread's share of a pass. */
typedef struct {
  int lo, hi;
} Range;

/* This thread's share of count channels: whole blocks of BLOCK, as even as they come. */
INLINE Range part(Share s, int count) {
  const int blocks = (count + BLOCK - 1) / BLOCK;
  const int lo = BLOCK * (blocks * s.rank / s.size), hi = BLOCK * (blocks * (s.rank + 1) / s.size);
  return (Range){lo < count ? lo : count, hi < count ? hi : count};
}

/* act(acc) into output channels co0..co0+CB at (y, x), NB vectors of images from n. */
INLINE void forward_store(v16 acc[BLOCK][2], float *outp, int co0, int Ho, int Wo, int N, int y,
                          int x, int n, const int NB, const int act, const int CB) {
  for (int c = 0; c < CB; c++)
    for (int j = 0; j < NB; j++)
      STORE(outp + (((int64_t)(co0 + c) * Ho + y) * Wo + x) * N + n + 16 * j,
            activate(act, acc[c][j]));
}

/* A product's operands, as the loops below read them: float32 maps and weights (bf 0), or
 * (bf 1, the bf16 products) maps in channel pairs and weights paired to match them (the bf16
 * section lays both out). Either way one 32-bit word per value or pair, at the same offsets,
 * the channel counts counting pairs: the loops read words through float pointers and leave
 * their bits alone; bf is a compile-time constant where they inline.
 * weight_at: the weight word at w in every lane, its bits as they are. */
INLINE v16 weight_at(const float *w) {
  const float f = *w;
  return (v16){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f};
}

/* acc + weight * v, weight as weight_at gives it: a float's product, or with bf the sum of
 * each lane's pair of products. */
INLINE v16 product_add(v16 acc, v16 v, v16 weight, const int bf) {
#if HAS_BF16
  if (bf) return (v16)_mm512_dpbf16_ps((__m512)acc, (__m512bh)v, (__m512bh)weight);
#endif
  return acc + weight * v;
}

/* Output channels co0..co0+CB of act(conv(in, w) + b) at (y, x), for NB vectors of images
 * from n: a load of each input vector feeds CB * NB accumulators. */
INLINE void forward_at(const float *inp, const float *wp, const float *bp, float *outp, int co0,
                       int Ci, int H, int W, int N, int y, int x, int n, const int NB,
                       const int bf, const int act, const int CB) {
  v16 acc[BLOCK][2];
  for (int c = 0; c < CB; c++)
    for (int j = 0; j < NB; j++) acc[c][j] = (v16){} + bp[co0 + c];
  for (int ci = 0; ci < Ci; ci++)
    for (int dy = 0; dy < 3; dy++)
      for (int dx = 0; dx < 3; dx++) {
        const float *src = inp + (((int64_t)ci * H + y + dy) * W + x + dx) * N + n;
        v16 v[2];
        for (int j = 0; j < NB; j++) v[j] = LOAD(src + 16 * j);
        const float *wk = wp + ((int64_t)co0 * Ci + ci) * 9 + dy * 3 + dx;
        for (int c = 0; c < CB; c++) {
          const v16 weight = weight_at(wk + (int64_t)c * Ci * 9);
          for (int j = 0; j < NB; j++) acc[c][j] = product_add(acc[c][j], v[j], weight, bf);
        }
      }
  forward_store(acc, outp, co0, H - 2, W - 2, N, y, x, n, NB, act, CB);
}

/* Output channels co0..co0+CB of one member's forward, output row y. */
INLINE void forward_block(const float *inp, const float *wp, const float *bp, float *outp,
                          int co0, int Ci, int H, int W, int N, int y, const int bf,
                          const int act, const int CB) {
  for (int x = 0; x < W - 2; x++) {
    int n = 0;
    for (; n + 32 <= N; n += 32)
      forward_at(inp, wp, bp, outp, co0, Ci, H, W, N, y, x, n, 2, bf, act, CB);
    if (n < N) forward_at(inp, wp, bp, outp, co0, Ci, H, W, N, y, x, n, 1, bf, act, CB);
  }
}

INLINE void forward(const float *in, const float *w, const float *b, float *out, Range co,
                    int Ci, int H, int W, int N, const int bf, const int act) {
  for (int y = 0; y < H - 2; y++)
    for (int co0 = co.lo, cb; co0 < co.hi; co0 += cb) {
      cb = block_of(co.hi - co0, BLOCK);
      BY_BLOCK(cb, BLOCK, forward_block, in, w, b, out, co0, Ci, H, W, N, y, bf, act)
    }
}

/* Output channels co of one member's out = act(conv(in, w) + b), from float32 operands, or
 * with bf from bf16 pairs (in, Ci pairs of channels, and w as pair_weights_in lays it out). */
static void conv_forward(const void *in, const void *w, const float *b, int act, float *out,
                         Range co, int Ci, int H, int W, int N, int bf) {
  if (HAS_BF16 && bf) {
    DISPATCH(act, forward, in, w, b, out, co, Ci, H, W, N, 1)
  } else {
    DISPATCH(act, forward, in, w, b, out, co, Ci, H, W, N, 0)
  }
}

/* Output channels co0..co0+CB of conv_pool_forward, pooled row y. The row and window loops
 * are unrolled so that the 4 * CB accumulators stay in registers. */
#define PBLOCK 4
/* The pooled output of channels co0..co0+CB at (y, x, n) from the sums at the window's four
 * positions, acc[k][c]: act(the largest) into outp, which of the four won into idxp. */
INLINE void pool_store(v16 acc[4][PBLOCK], float *outp, int32_t *idxp, int co0, int Hp, int Wp,
                       int N, int y, int x, int n, int act, const int CB) {
  for (int c = 0; c < CB; c++) {
    v16 best = acc[0][c];
    v16i which = {};
    for (int k = 1; k < 4; k++) {
      const v16i wins = acc[k][c] > best;
      best = blend(wins, acc[k][c], best);
      which = (wins & ((v16i){} + k)) | (which & ~wins);
    }
    const int64_t o = ((((int64_t)co0 + c) * Hp + y) * Wp + x) * N + n;
    STORE(outp + o, activate(act, best));
    STOREI(idxp + o, which);
  }
}

INLINE void pool_block(const float *inp, const float *wp, const float *bp, float *outp,
                       int32_t *idxp, int co0, int Ci, int H, int W, int N, int y, int act,
                       const int bf, const int CB) {
  const int Hp = (H - 2) / 2, Wp = (W - 2) / 2;
  for (int x = 0; x < Wp; x++)
    for (int n = 0; n < N; n += 16) {
      v16 acc[4][PBLOCK];
      for (int k = 0; k < 4; k++)
        for (int c = 0; c < CB; c++) acc[k][c] = (v16){} + bp[co0 + c];
      for (int ci = 0; ci < Ci; ci++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
          v16 v[4];
          for (int j = 0; j < 4; j++)
            v[j] = LOAD(inp + (((int64_t)ci * H + 2 * y + r) * W + 2 * x + j) * N + n);
#pragma GCC unroll 2
          for (int ky = 0; ky < 2; ky++) {
            const int dy = r - ky;
            if (dy < 0 || dy > 2) continue;
            for (int c = 0; c < CB; c++) {
              const float *wk = wp + (((int64_t)co0 + c) * Ci + ci) * 9 + dy * 3;
              for (int kx = 0; kx < 2; kx++)
                for (int dx = 0; dx < 3; dx++)
                  acc[ky * 2 + kx][c] =
                      product_add(acc[ky * 2 + kx][c], v[kx + dx], weight_at(wk + dx), bf);
            }
          }
        }
      pool_store(acc, outp, idxp, co0, Hp, Wp, N, y, x, n, act, CB);
    }
}

INLINE void pool_rows(const float *in, const float *w, const float *b, int act, float *out,
                      int32_t *idx, Range co, int Ci, int H, int W, int N, const int bf) {
  for (int y = 0; y < (H - 2) / 2; y++)
    for (int co0 = co.lo, cb; co0 < co.hi; co0 += cb) {
      cb = block_of(co.hi - co0, PBLOCK);
      BY_BLOCK(cb, PBLOCK, pool_block, in, w, b, out, idx, co0, Ci, H, W, N, y, act, bf)
    }
}

/* Output channels co of one member's out = act(2x2 max pooling of conv(in, w) + b); idx = which of the window's four won
 * (0-3, the first maximum in row-major order, as torch picks it), one int per output value.
 * Pooling first is the same as activating first: every coded activation is non-decreasing.
 * A window's four positions read one 4x4 patch of each input channel, loaded row by row;
 * act is a runtime switch, applied once per pooled output of four sums. Operands as
 * conv_forward's. */
static void conv_pool_forward(const void *in, const void *w, const float *b, int act,
                              float *out, int32_t *idx, Range co, int Ci, int H, int W, int N,
                              int bf) {
  if (HAS_BF16 && bf)
    pool_rows(in, w, b, act, out, idx, co, Ci, H, W, N, 1);
  else
    pool_rows(in, w, b, act, out, idx, co, Ci, H, W, N, 0);
}

/* The input gradient of channels ci0..ci0+CB at (y, x), NB vectors of images from n, from
 * the sums acc: times act'(in) unless act is LINEAR. */
INLINE void input_grad_store(v16 acc[BLOCK][4], const float *inp, float *ginp, int ci0, int H,
                             int W, int N, int y, int x, int n, const int NB, int act,
                             const int CB) {
  for (int c = 0; c < CB; c++)
    for (int j = 0; j < NB; j++) {
      const int64_t o = (((int64_t)(ci0 + c) * H + y) * W + x) * N + n + 16 * j;
      STORE(ginp + o, act == LINEAR ? acc[c][j] : acc[c][j] * derivative(act, LOAD(inp + o)));
    }
}

/* Input channels ci0..ci0+CB of conv_backward_input at (y, x), NB vectors of images from n. */
INLINE void backward_input_at(const float *gp, const float *wp, const float *inp, float *ginp,
                              int ci0, int Ci, int Co, int H, int W, int N, int y, int x, int n,
                              const int NB, int act, const int bf, const int CB) {
  const int Ho = H - 2, Wo = W - 2;
  v16 acc[BLOCK][4];
  for (int c = 0; c < CB; c++)
    for (int j = 0; j < NB; j++) acc[c][j] = (v16){};
  for (int dy = 0; dy < 3; dy++) {
    const int yo = y - dy;
    if (yo < 0 || yo >= Ho) continue;
    for (int dx = 0; dx < 3; dx++) {
      const int xo = x - dx;
      if (xo < 0 || xo >= Wo) continue;
      for (int co = 0; co < Co; co++) {
        const float *src = gp + (((int64_t)co * Ho + yo) * Wo + xo) * N + n;
        v16 v[4];
        for (int j = 0; j < NB; j++) v[j] = LOAD(src + 16 * j);
        const float *wk = wp + ((int64_t)co * Ci + ci0) * 9 + dy * 3 + dx;
        for (int c = 0; c < CB; c++) {
          const v16 weight = weight_at(wk + c * 9);
          for (int j = 0; j < NB; j++) acc[c][j] = product_add(acc[c][j], v[j], weight, bf);
        }
      }
    }
  }
  input_grad_store(acc, inp, ginp, ci0, H, W, N, y, x, n, NB, act, CB);
}

/* Input channels ci0..ci0+CB of one member's conv_backward_input, row y: up to 16
 * accumulators, CB channels by as many vectors of images as fit. */
INLINE void backward_input_block(const float *gp, const float *wp, const float *inp, float *ginp,
                                 int ci0, int Ci, int Co, int H, int W, int N, int y, int act,
                                 const int bf, const int CB) {
  const int NB = CB >= 8 ? 2 : 4;
  for (int x = 0; x < W; x++) {
    int n = 0;
    for (; n + 16 * NB <= N; n += 16 * NB)
      backward_input_at(gp, wp, inp, ginp, ci0, Ci, Co, H, W, N, y, x, n, NB, act, bf, CB);
    for (; n < N; n += 16)
      backward_input_at(gp, wp, inp, ginp, ci0, Ci, Co, H, W, N, y, x, n, 1, act, bf, CB);
  }
}

INLINE void backward_input_rows(const float *g, const float *w, const float *in, int act,
                                float *gin, Range ci, int Ci, int Co, int H, int W, int N,
                                const int bf) {
  for (int y = 0; y < H; y++)
    for (int ci0 = ci.lo, cb; ci0 < ci.hi; ci0 += cb) {
      cb = block_of(ci.hi - ci0, BLOCK);
      BY_BLOCK(cb, BLOCK, backward_input_block, g, w, in, gin, ci0, Ci, Co, H, W, N, y, act, bf)
    }
}

/* Input channels ci of one member's gin[ci, y, x] = act'(in[ci, y, x]) * sum over co, dy, dx
 * of w[co, ci, dy, dx] * g[co, y - dy, x - dx],
 * the gradient of the layer's input before its activation: in holds that activation's
 * output and act its code (LINEAR: the gradient of in itself), a runtime switch applied once
 * per sum of 9 * Co products. With bf, g in channel pairs (Co pairs) and w as
 * pair_weights_out lays it out. */
static void conv_backward_input(const void *g, const void *w, const float *in, int act,
                                float *gin, Range ci, int Ci, int Co, int H, int W, int N,
                                int bf) {
  if (HAS_BF16 && bf)
    backward_input_rows(g, w, in, act, gin, ci, Ci, Co, H, W, N, 1);
  else
    backward_input_rows(g, w, in, act, gin, ci, Ci, Co, H, W, N, 0);
}

/* The sum of a vector's 16 lanes. */
INLINE float lanes_sum(v16 v) {
  float s = 0.0f;
  for (int l = 0; l < 16; l++) s += v[l];
  return s;
}

/* Output channels co0..co0+CB of conv_backward_weight for one member, output rows y0..y1,
 * added to gwp and gbp: each input load feeds the CB channels' nine taps (WBLOCK * 9
 * accumulators at most). */
#define WBLOCK 2
INLINE void backward_weight_block(const float *gp, const float *inp, float *gwp, float *gbp,
                                  int co0, int Ci, int H, int W, int N, int y0, int y1,
                                  const int CB) {
  const int Ho = H - 2, Wo = W - 2;
  v16 bias[WBLOCK] = {};
  for (int ci = 0; ci < Ci; ci++) {
    v16 acc[WBLOCK][9];
    for (int c = 0; c < CB; c++)
      for (int k = 0; k < 9; k++) acc[c][k] = (v16){};
    for (int y = y0; y < y1; y++)
      for (int x = 0; x < Wo; x++)
        for (int n = 0; n < N; n += 16) {
          v16 gv[WBLOCK];
          for (int c = 0; c < CB; c++) {
            gv[c] = LOAD(gp + (((int64_t)(co0 + c) * Ho + y) * Wo + x) * N + n);
            if (ci == 0) bias[c] += gv[c];
          }
          for (int dy = 0; dy < 3; dy++)
            for (int dx = 0; dx < 3; dx++) {
              const v16 v = LOAD(inp + (((int64_t)ci * H + y + dy) * W + x + dx) * N + n);
              for (int c = 0; c < CB; c++) acc[c][dy * 3 + dx] += gv[c] * v;
            }
        }
    for (int c = 0; c < CB; c++)
      for (int k = 0; k < 9; k++)
        gwp[((int64_t)(co0 + c) * Ci + ci) * 9 + k] += lanes_sum(acc[c][k]);
  }
  for (int c = 0; c < CB; c++) gbp[co0 + c] += lanes_sum(bias[c]);
}

/* Rows of output per tile of conv_backward_weight: every channel pair and input channel
 * passes over a tile of the maps while it is in cache (about 64 KiB of each map). */
INLINE int weight_tile_rows(int Wo, int N) {
  const int rows = 16384 / (Wo * N);
  return rows < 1 ? 1 : rows;
}

/* 2x2 max pooling of channels c of (C, H, W, N) maps, with idx as conv_pool_forward's. */
static void pool_forward(const float *in, float *out, int32_t *idx, Range c, int H, int W, int N) {
  const int Ho = H / 2, Wo = W / 2;
  for (int m = c.lo; m < c.hi; m++)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++)
        for (int n = 0; n < N; n += 16) {
          const float *a = in + (((int64_t)m * H + 2 * y) * W + 2 * x) * N + n;
          const float *window[4] = {a, a + N, a + (int64_t)W * N, a + (int64_t)W * N + N};
          v16 best = LOAD(window[0]);
          v16i which = {};
          for (int k = 1; k < 4; k++) {
            const v16 v = LOAD(window[k]);
            const v16i wins = v > best;
            best = blend(wins, v, best);
            which = (wins & ((v16i){} + k)) | (which & ~wins);
          }
          const int64_t o = (((int64_t)m * Ho + y) * Wo + x) * N + n;
          STORE(out + o, best);
          STOREI(idx + o, which);
        }
}

/* The gradient a block's backward pass receives, of what its forward pass passed on: g
 * (bf16 where rounded: a bf16 layer read the output) of out * scale, the dropout after the
 * block (scale NULL: of out itself). */
typedef struct {
  const void *g;
  const float *scale;
  int rounded;
} Arriving;

/* a's values from offset at on: a member's. */
INLINE Arriving arriving_at(Arriving a, int64_t at) {
  const void *g = a.rounded ? (const void *)((const uint16_t *)a.g + at)
                            : (const void *)((const float *)a.g + at);
  return (Arriving){g, a.scale ? a.scale + at : NULL, a.rounded};
}

/* 16 bf16s as floats (exactly: a bf16 is a float's upper half); with AVX-512 one widening
 * load, as bytes_as_floats' is. */
typedef uint16_t v16s __attribute__((vector_size(32), aligned(2)));
INLINE v16 widened(const uint16_t *p) {
#ifdef __AVX512F__
  return (v16)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
#else
  return (v16)(__builtin_convertvector(*(const v16s *)p, v16i) << 16);
#endif
}

/* The gradient of the pooled maps' sums at offset o, from a's (times its scale's), times
 * act'(out) unless act is LINEAR. */
INLINE v16 pooled_gradient(Arriving a, const float *out, int act, int64_t o) {
  v16 gv = a.rounded ? widened((const uint16_t *)a.g + o) : LOAD((const float *)a.g + o);
  if (a.scale) gv *= LOAD(a.scale + o);
  return act == LINEAR ? gv : gv * derivative(act, LOAD(out + o));
}

/* Channels c of gin = the pooled gradient a, times act'(out) where out holds the activated
 * pooled maps, routed back to each window's winner idx, zero elsewhere (an odd last row or
 * column, which no window covers, included) */
static void pool_backward(Arriving a, const int32_t *idx, const float *out, int act, float *gin,
                          Range c, int H, int W, int N) {
  const int Ho = H / 2, Wo = W / 2;
  for (int m = c.lo; m < c.hi; m++) {
    float *map = gin + (int64_t)m * H * W * N;
    if (H & 1)
      for (int64_t i = (int64_t)(H - 1) * W * N; i < (int64_t)H * W * N; i++) map[i] = 0.0f;
    if (W & 1)
      for (int y = 0; y < H; y++)
        for (int n = 0; n < N; n++) map[((int64_t)y * W + W - 1) * N + n] = 0.0f;
  }
  for (int m = c.lo; m < c.hi; m++)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++)
        for (int n = 0; n < N; n += 16) {
          const int64_t o = (((int64_t)m * Ho + y) * Wo + x) * N + n;
          const v16 gv = pooled_gradient(a, out, act, o);
          const v16i which = LOADI(idx + o);
          float *at = gin + (((int64_t)m * H + 2 * y) * W + 2 * x) * N + n;
          float *window[4] = {at, at + N, at + (int64_t)W * N, at + (int64_t)W * N + N};
          for (int k = 0; k < 4; k++)
            STORE(window[k], (v16)((v16i)gv & (which == ((v16i){} + k))));
        }
}

/* --- bf16 products (precision bf16) --------------------------------------------------------
 * With AVX512_BF16 a convolution's three products (forward, input gradient, weight gradient)
 * can take bfloat16 operands and add them into float32 sums: vdpbf16ps adds to each
 * float lane the products of a pair of bf16s, so one instruction does twice the work of a
 * float FMA and every load moves twice the values. The forward and input-gradient products
 * sum over channels, so their maps are laid out in channel pairs, (C/2, H, W, N, 2), each
 * (pair, y, x) holding 16 images' two channels (a missing odd channel reads 0), and their
 * weights as pairs across the summed channel; the weight gradient sums over images, so it
 * reads plain (C, H, W, N) bf16 maps, 32 images a vector. The weights, biases, norms,
 * activations and pooling stay float32; each call rounds the weights it reads (to nearest
 * even), as it rounds the maps. Which convolutions take them: products_of. */
#if HAS_BF16

/* f rounded to bf16 (to nearest even; a NaN stays a NaN), as vcvtneps2bf16 rounds it. */
INLINE uint32_t bf16_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* The pair (lo, hi) of w's values at offsets 0 and step, hi 0 where has_hi is false. */
INLINE uint32_t bf16_pair(const float *w, int64_t step, int has_hi) {
  return bf16_bits(w[0]) | (has_hi ? bf16_bits(w[step]) << 16 : 0u);
}

/* Output channels co of w (Co, Ci, 3, 3) in pairs across input channels:
 * wf[o][cp][k] = (w[o][2cp][k], w[o][2cp+1][k]), (Co, Ci/2 rounded up, 9). */
static void pair_weights_in(const float *w, uint32_t *wf, Range co, int Ci) {
  const int Cp = (Ci + 1) / 2;
  for (int o = co.lo; o < co.hi; o++)
    for (int cp = 0; cp < Cp; cp++)
      for (int k = 0; k < 9; k++)
        wf[((int64_t)o * Cp + cp) * 9 + k] =
            bf16_pair(w + ((int64_t)o * Ci + 2 * cp) * 9 + k, 9, 2 * cp + 1 < Ci);
}

/* Input channels ci of w (Co, Ci, 3, 3) in pairs across output channels:
 * wi[op][i][k] = (w[2op][i][k], w[2op+1][i][k]), (Co/2 rounded up, Ci, 9). */
static void pair_weights_out(const float *w, uint32_t *wi, Range ci, int Ci, int Co) {
  const int Op = (Co + 1) / 2;
  for (int op = 0; op < Op; op++)
    for (int i = ci.lo; i < ci.hi; i++)
      for (int k = 0; k < 9; k++)
        wi[((int64_t)op * Ci + i) * 9 + k] =
            bf16_pair(w + ((int64_t)2 * op * Ci + i) * 9 + k, (int64_t)Ci * 9, 2 * op + 1 < Co);
}

/* 16 lanes of two channels, lo and hi, rounded to bf16 and stored as 16 pairs at out. */
INLINE void store_pairs(uint32_t *out, v16 lo, v16 hi) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                              25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                              18, 2, 17, 1, 16, 0);
  const __m512bh halves = _mm512_cvtne2ps_pbh((__m512)hi, (__m512)lo);
  _mm512_storeu_si512(out, _mm512_permutexvar_epi16(interleave, (__m512i)halves));
}

/* 16 lanes of a channel rounded to bf16 and stored at out. */
INLINE void store_rounded(uint16_t *out, v16 v) {
  _mm256_storeu_si256((__m256i *)out, (__m256i)_mm512_cvtneps_pbh((__m512)v));
}

/* Channels c (c.lo even) of float maps (C, M) as bf16 channel pairs (C/2 rounded up, M, 2). */
static void pair_maps(const float *in, uint32_t *out, Range c, int C, int64_t M) {
  for (int cp = c.lo / 2; cp < (c.hi + 1) / 2; cp++) {
    const float *even = in + 2 * cp * M, *odd = 2 * cp + 1 < C ? even + M : NULL;
    for (int64_t i = 0; i < M; i += 16)
      store_pairs(out + cp * M + i, LOAD(even + i), odd ? LOAD(odd + i) : (v16){});
  }
}

/* Channels c of float maps (C, M) as bf16s in the same layout. */
static void round_maps(const float *in, uint16_t *out, Range c, int64_t M) {
  for (int64_t i = c.lo * M; i < c.hi * M; i += 16) store_rounded(out + i, LOAD(in + i));
}

/* pool_backward's gradient as the bf16 products read it, rounded as it is routed (the bits
 * pair_maps and round_maps would make of the float result): channels c (c.lo even) of gin
 * plain (gb, (C, H, W, N)) and in channel pairs (gp). */
static void pool_backward_bf16(Arriving a, const int32_t *idx, const float *out, int act,
                               uint16_t *gb, uint32_t *gp, Range c, int C, int H, int W, int N) {
  const int Ho = H / 2, Wo = W / 2;
  const int64_t M = (int64_t)H * W * N;
  for (int m = c.lo; m < c.hi; m++) /* what no window covers: an odd last row or column */
    for (int y = 0; y < H; y++)
      for (int x = (y < 2 * Ho ? 2 * Wo : 0); x < W; x++) {
        const int64_t at = ((int64_t)y * W + x) * N;
        __builtin_memset(gb + m * M + at, 0, N * sizeof *gb);
        if (m % 2 == 0) __builtin_memset(gp + m / 2 * M + at, 0, N * sizeof *gp);
      }
  for (int cp = c.lo / 2; cp < (c.hi + 1) / 2; cp++)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++)
        for (int n = 0; n < N; n += 16) {
          v16 window[2][4] = {};
          for (int half = 0; half < 2 && 2 * cp + half < C; half++) {
            const int m = 2 * cp + half;
            const int64_t o = (((int64_t)m * Ho + y) * Wo + x) * N + n;
            const v16 gv = pooled_gradient(a, out, act, o);
            const v16i which = LOADI(idx + o);
            for (int k = 0; k < 4; k++)
              window[half][k] = (v16)((v16i)gv & (which == ((v16i){} + k)));
          }
          for (int k = 0; k < 4; k++) {
            const int64_t at = ((int64_t)(2 * y + k / 2) * W + 2 * x + k % 2) * N + n;
            for (int half = 0; half < 2 && 2 * cp + half < C; half++)
              store_rounded(gb + (2 * cp + half) * M + at, window[half][k]);
            store_pairs(gp + cp * M + at, window[0][k], window[1][k]);
          }
        }
}

/* 32 bf16s from p (the first 16, then zeros, where lanes is 0xffff). A whole vector loads as
 * a plain vector type: through the intrinsics' may-alias types the compiler would not hold the
 * sums in registers across it (the weight gradient ran at float32's speed so). */
typedef uint16_t v32h __attribute__((vector_size(64), aligned(2)));
INLINE __m512bh load_bf16(const uint16_t *p, __mmask32 lanes) {
  if (lanes == 0xffffffffu) return (__m512bh)(*(const v32h *)p);
  return (__m512bh)_mm512_maskz_loadu_epi16(lanes, p);
}

/* One step of backward_weight_bf16_block: 32 values (16 where lanes is 0xffff) at offset i
 * of each output channel's gradient row g[c] and of each tap's input row in[k]. */
INLINE void weight_products_bf16(const uint16_t *g[WBLOCK], const uint16_t *in[9],
                                 v16 acc[WBLOCK][9], int64_t i, __mmask32 lanes, const int CB) {
  __m512bh gv[WBLOCK];
  for (int c = 0; c < CB; c++) gv[c] = load_bf16(g[c] + i, lanes);
  for (int k = 0; k < 9; k++) {
    const __m512bh v = load_bf16(in[k] + i, lanes);
    for (int c = 0; c < CB; c++) acc[c][k] = (v16)_mm512_dpbf16_ps((__m512)acc[c][k], gv[c], v);
  }
}

/* backward_weight_block from plain bf16 maps. Within a row, the (x, n) of the gradient and
 * of each tap's input are contiguous, so each row is one run of 32 values a vector (the last
 * 16 alone where the row holds an odd number of 16s); the bias gradient is the sum of the
 * products of g with 1. */
INLINE void backward_weight_bf16_block(const uint16_t *gp, const uint16_t *inp, float *gwp,
                                       float *gbp, int co0, int Ci, int H, int W, int N, int y0,
                                       int y1, const int CB) {
  const int Ho = H - 2, Wo = W - 2;
  const int64_t row = (int64_t)Wo * N, whole = row / 32 * 32;
  const __m512bh one = (__m512bh)_mm512_set1_epi16(0x3f80);
  for (int c = 0; c < CB; c++) {
    v16 bias = {};
    for (int y = y0; y < y1; y++) {
      const uint16_t *gc = gp + ((int64_t)(co0 + c) * Ho + y) * row;
      for (int64_t i = 0; i < row; i += 32) {
        const __m512bh v = load_bf16(gc + i, i < whole ? 0xffffffffu : 0xffffu);
        bias = (v16)_mm512_dpbf16_ps((__m512)bias, v, one);
      }
    }
    gbp[co0 + c] += lanes_sum(bias);
  }
  for (int ci = 0; ci < Ci; ci++) {
    v16 acc[WBLOCK][9];
    for (int c = 0; c < CB; c++)
      for (int k = 0; k < 9; k++) acc[c][k] = (v16){};
    for (int y = y0; y < y1; y++) {
      const uint16_t *g[WBLOCK], *in[9];
      for (int c = 0; c < CB; c++) g[c] = gp + ((int64_t)(co0 + c) * Ho + y) * row;
      for (int k = 0; k < 9; k++) in[k] = inp + (((int64_t)ci * H + y + k / 3) * W + k % 3) * N;
      for (int64_t i = 0; i < whole; i += 32) weight_products_bf16(g, in, acc, i, 0xffffffffu, CB);
      if (whole < row) weight_products_bf16(g, in, acc, whole, 0xffffu, CB);
    }
    for (int c = 0; c < CB; c++)
      for (int k = 0; k < 9; k++)
        gwp[((int64_t)(co0 + c) * Ci + ci) * 9 + k] += lanes_sum(acc[c][k]);
  }
}

#endif

/* Output channels co of one member's gw[co, ci, dy, dx] = sum over y, x, n of
 * g[co, y, x, n] * in[ci, y + dy, x + dx, n] and gb[co] = sum of g[co], from float maps, or
 * with bf from plain bf16 maps. Two output channels at a time share each input load. */
static void conv_backward_weight(const void *g, const void *in, float *gw, float *gb, Range co,
                                 int Ci, int H, int W, int N, int bf) {
  const int Ho = H - 2, rows = weight_tile_rows(W - 2, N);
  for (int64_t i = (int64_t)co.lo * Ci * 9; i < (int64_t)co.hi * Ci * 9; i++) gw[i] = 0.0f;
  for (int c = co.lo; c < co.hi; c++) gb[c] = 0.0f;
  for (int y0 = 0; y0 < Ho; y0 += rows) {
    const int y1 = y0 + rows < Ho ? y0 + rows : Ho;
    for (int co0 = co.lo, cb; co0 < co.hi; co0 += cb) {
      cb = block_of(co.hi - co0, WBLOCK);
#if HAS_BF16
      if (bf) {
        BY_BLOCK(cb, WBLOCK, backward_weight_bf16_block, g, in, gw, gb, co0, Ci, H, W, N, y0, y1)
        continue;
      }
#endif
      BY_BLOCK(cb, WBLOCK, backward_weight_block, g, in, gw, gb, co0, Ci, H, W, N, y0, y1)
    }
  }
}

/* Whether this build has the bf16 products (the CPU has AVX512_BF16). */
int bf16_products(void) { return HAS_BF16; }

/* softmax over the C channel planes of (C, M) maps, in place, as torch computes it:
 * exp(z - max) / sum; M is a multiple of 16 */
static void softmax_channels(float *z, int C, int64_t M) {
  for (int64_t i = 0; i < M; i += 16) {
    v16 top = LOAD(z + i);
    for (int c = 1; c < C; c++) {
      const v16 v = LOAD(z + c * M + i);
      top = blend(v > top, v, top);
    }
    v16 sum = {};
    for (int c = 0; c < C; c++) {
      const v16 e = exp16(LOAD(z + c * M + i) - top);
      STORE(z + c * M + i, e);
      sum += e;
    }
    for (int c = 0; c < C; c++) STORE(z + c * M + i, LOAD(z + c * M + i) / sum);
  }
}

/* softmax's backward pass from its output a, in place: g = a * (g - sum over c of g * a) */
static void softmax_backward(float *g, const float *a, int C, int64_t M) {
  for (int64_t i = 0; i < M; i += 16) {
    v16 dot = {};
    for (int c = 0; c < C; c++) dot += LOAD(g + c * M + i) * LOAD(a + c * M + i);
    for (int c = 0; c < C; c++)
      STORE(g + c * M + i, LOAD(a + c * M + i) * (LOAD(g + c * M + i) - dot));
  }
}

/* Which of a stack call's convolutions take bf16 products: asked for (bf16) and built
 * (HAS_BF16); the first only for an input of two channels or more (a grey image's is a few
 * percent of the work, and half a pair). */
typedef struct {
  int second, first;
} Products;

INLINE Products products_of(int bf16, int C0) {
  const int second = HAS_BF16 && bf16;
  return (Products){second, second && C0 >= 2};
}

/* The bf16 copies a stack call's products read, in its scratch space after its float maps.
 * The first convolution's (b.first): its input x in channel pairs (xp) and w1 paired across
 * input channels (w1f); backward, x plain (xb), its output's gradient plain (ghb) and in
 * pairs (ghp), and w1 paired across output channels (w1o). The second's (b.second) likewise:
 * hp, w2f; backward g2b, g2p, hb, w2o. A backward call has regions of its own for the
 * forward pairs, where it recomputes maps: no thread of a team overwrites them while another
 * still reads them. */
typedef struct {
  uint32_t *xp, *w1f, *hp, *w2f, *ghp, *w1o, *g2p, *w2o;
  uint16_t *xb, *ghb, *hb, *g2b;
  int64_t floats; /* how many floats they take */
} Rounded;

/* n floats of scratch at base's offset *taken (NULL where base is: counting only), taken. */
INLINE void *take(float *base, int64_t *taken, int64_t n) {
  float *at = base ? base + *taken : NULL;
  *taken += n;
  return at;
}

INLINE Rounded rounded_of(float *base, int C0, int C1, int C2, int H, int W, int N, Products b,
                          int backward) {
  const int64_t m0 = (int64_t)H * W * N, m1 = (int64_t)(H - 2) * (W - 2) * N;
  const int64_t m2 = (int64_t)(H - 4) * (W - 4) * N;
  const int64_t p0 = (C0 + 1) / 2, p1 = (C1 + 1) / 2, p2 = (C2 + 1) / 2;
  Rounded r = {0};
  int64_t *n = &r.floats;
  if (b.first) {
    r.xp = take(base, n, p0 * m0);
    r.w1f = take(base, n, C1 * p0 * 9);
  }
  if (b.second) {
    r.hp = take(base, n, p1 * m1);
    r.w2f = take(base, n, C2 * p1 * 9);
  }
  if (b.first && backward) {
    r.xb = take(base, n, C0 * m0 / 2);
    r.ghb = take(base, n, C1 * m1 / 2);
    r.ghp = take(base, n, p1 * m1);
    r.w1o = take(base, n, C0 * p1 * 9);
  }
  if (b.second && backward) {
    r.hb = take(base, n, C1 * m1 / 2);
    r.g2b = take(base, n, C2 * m2 / 2);
    r.g2p = take(base, n, p2 * m2);
    r.w2o = take(base, n, C1 * p2 * 9);
  }
  return r;
}

/* One member's second maps before pooling, softmax's: a = softmax(conv(h, w2) + b2), with
 * bf16 products where b.second: it pairs h and w2 itself, as softmax runs on one thread. */
static void second_softmax(Products b, const Rounded *r, const float *h, const float *w2,
                           const float *b2, float *a, int C1, int C2, int H, int W, int N) {
  const Range every = {0, C2};
#if HAS_BF16
  if (b.second) {
    pair_maps(h, r->hp, (Range){0, C1}, C1, (int64_t)(H - 2) * (W - 2) * N);
    pair_weights_in(w2, r->w2f, every, C1);
    conv_forward(r->hp, r->w2f, b2, LINEAR, a, every, (C1 + 1) / 2, H - 2, W - 2, N, 1);
  }
#endif
  if (!b.second) conv_forward(h, w2, b2, LINEAR, a, every, C1, H - 2, W - 2, N, 0);
  softmax_channels(a, C2, (int64_t)(H - 4) * (W - 4) * N);
}

/* Floats of one member's maps, both layers: the first's and the second's before pooling. */
INLINE int64_t maps_floats(int C1, int C2, int H, int W, int N) {
  return ((int64_t)C1 * (H - 2) * (W - 2) + (int64_t)C2 * (H - 4) * (W - 4)) * N;
}

/* Floats of scratch space one call needs: stack_forward's (norm 0, backward 0), its
 * backward's, norm_stack_forward's or its backward's: float maps (one, two or three
 * members' worth), then rounded_of's copies. */
int64_t stack_scratch(int C0, int C1, int C2, int H, int W, int N, int bf16, int norm,
                      int backward) {
  const int64_t maps = maps_floats(C1, C2, H, W, N) * (backward ? (norm ? 3 : 2) : 1);
  const Products b = products_of(bf16, C0);
  return maps + rounded_of(NULL, C0, C1, C2, H, W, N, b, backward).floats;
}

/* out = conv(in, w) + b (activated by act) for this thread's output channels co, with bf16
 * products where bf: this thread pairs the input's channels ci and the weights' rows co,
 * waits for the team's pairs, then sums. */
static void conv_products(Share s, int bf, uint32_t *pairs, uint32_t *wf, const float *in,
                          const float *w, const float *b, int act, float *out, Range ci,
                          Range co, int Ci, int H, int W, int N) {
#if HAS_BF16
  if (bf) {
    pair_maps(in, pairs, ci, Ci, (int64_t)H * W * N);
    pair_weights_in(w, wf, co, Ci);
    team_wait(s); /* the pairs whole */
    conv_forward(pairs, wf, b, act, out, co, (Ci + 1) / 2, H, W, N, 1);
    return;
  }
#endif
  conv_forward(in, w, b, act, out, co, Ci, H, W, N, 0);
}

/* Channels c of a member's output (from offset at, maps of M values a channel) as the layer
 * after the block reads it: passed = out * scale (its dropout; NULL: out itself), rounded to
 * bf16 where rounded (a layer with bf16 products reads it), while out is in cache. */
static void pass_maps(const float *out, const float *scale, void *passed, int rounded,
                      int64_t at, Range c, int64_t M) {
  for (int64_t i = at + c.lo * M; i < at + c.hi * M; i += 16) {
    const v16 v = scale ? LOAD(out + i) * LOAD(scale + i) : LOAD(out + i);
#if HAS_BF16
    if (rounded) {
      store_rounded((uint16_t *)passed + i, v);
      continue;
    }
#endif
    STORE((float *)passed + i, v);
  }
}

/* Where thread rank stands in a stack call's team. Softmax mixes the channels the threads
 * would split, so it runs on rank 0 alone: the others get a share past the team's end
 * (rank >= size) and return at once. */
INLINE Share stack_share(int rank, Team *team, int act) {
  return act == SOFTMAX ? (Share){rank, 1, NULL} : share_of(rank, team);
}

/* One member's first maps, channels r1 of h = act(conv(x, w1) + b1) (softmax: every channel,
 * as it runs on one thread), with the first convolution's bf16 products where b.first. */
static void first_maps(Share s, Products b, const Rounded *r, const float *x, const float *w1,
                       const float *b1, int act, float *h, Range r0, Range r1, int C0, int C1,
                       int H, int W, int N) {
  conv_products(s, b.first, r->xp, r->w1f, x, w1, b1, act == SOFTMAX ? LINEAR : act, h, r0, r1,
                C0, H, W, N);
  if (act == SOFTMAX) softmax_channels(h, C1, (int64_t)(H - 2) * (W - 2) * N);
}

/* The whole convolution stack, a member at a time, so that its intermediate maps stay in
 * cache: out = act(pool(conv(act(conv(x, w1) + b1), w2) + b2)), idx as conv_pool_forward's
 * (softmax: pool(softmax(...)), as it does not commute with pooling). x is (P, C0, H, W, N);
 * scratch holds stack_scratch(..., 0, 0) floats: h, the first maps (C1 * (H-2) * (W-2) * N),
 * a, softmax's second maps, then the bf16 copies. maps, unless NULL, keeps each member's
 * first maps for stack_backward (P, C1, H-2, W-2, N), which then need not be recomputed
 * (softmax: and its second maps, (P, C1 * (H-2) * (W-2) + C2 * (H-4) * (W-4), N)).
 * bf16: the convolutions' products in bf16 where this build has them (products_of). passed,
 * unless NULL, gets what the next layer reads (pass_maps: out * scale, scale the dropout after
 * the block, in bf16 where rounded), a member at a time. Thread rank of a team (NULL: a
 * thread alone) computes its share of each pass's channels. */
void stack_forward(const float *x, const float *w1, const float *b1, const float *w2,
                   const float *b2, int act, int bf16, const float *scale, float *out,
                   void *passed, int rounded, int32_t *idx, float *maps, float *scratch, int P,
                   int C0, int C1, int C2, int H, int W, int N, int rank, Team *team) {
  const Share s = stack_share(rank, team, act);
  if (s.rank >= s.size) return;
  const Range r0 = part(s, C0), r1 = part(s, C1), r2 = part(s, C2);
  const int64_t image = (int64_t)C0 * H * W * N, first = (int64_t)C1 * (H - 2) * (W - 2) * N;
  const int64_t pooled = (int64_t)C2 * ((H - 4) / 2) * ((W - 4) / 2) * N;
  const Products b = products_of(bf16, C0);
  const int64_t kept = act == SOFTMAX ? maps_floats(C1, C2, H, W, N) : first;
  const Rounded r = rounded_of(scratch + maps_floats(C1, C2, H, W, N), C0, C1, C2, H, W, N, b, 0);
  for (int p = 0; p < P; p++) {
    const float *w2p = w2 + (int64_t)p * C2 * C1 * 9, *b2p = b2 + (int64_t)p * C2;
    float *h = maps ? maps + p * kept : scratch, *a = h + first;
    first_maps(s, b, &r, x + p * image, w1 + (int64_t)p * C1 * C0 * 9, b1 + (int64_t)p * C1, act,
               h, r0, r1, C0, C1, H, W, N);
#if HAS_BF16
    if (b.second && act != SOFTMAX) {
      pair_maps(h, r.hp, r1, C1, first / C1);
      pair_weights_in(w2p, r.w2f, r2, C1);
    }
#endif
    team_wait(s); /* h whole */
    if (act == SOFTMAX) {
      second_softmax(b, &r, h, w2p, b2p, a, C1, C2, H, W, N);
      pool_forward(a, out + p * pooled, idx + p * pooled, r2, H - 4, W - 4, N);
    } else if (b.second) {
      conv_pool_forward(r.hp, r.w2f, b2p, act, out + p * pooled, idx + p * pooled, r2,
                        (C1 + 1) / 2, H - 2, W - 2, N, 1);
    } else {
      conv_pool_forward(h, w2p, b2p, act, out + p * pooled, idx + p * pooled, r2, C1, H - 2,
                        W - 2, N, 0);
    }
    if (passed) pass_maps(out, scale, passed, rounded, p * pooled, r2, pooled / C2);
    team_wait(s); /* the next member's maps overwrite h */
  }
}

/* The second convolution's products of a backward pass, from g2, the gradient of its output
 * (C2, H-2, W-2, N maps of input h, C1 channels): this thread's channels r2 of the weight
 * and bias gradients and r1 of the gradient of h before its activation, gh (act: h's
 * activation; LINEAR: h's own). With bf16 (b.second) they read the copies this thread and the
 * team made before their last wait (bf16_copies). */
static void second_gradients(Products b, const Rounded *r, const float *g2, const float *h,
                             const float *w2, int act, float *gw2, float *gb2, float *gh, Range r1,
                             Range r2, int C1, int C2, int H, int W, int N) {
  if (b.second) {
    conv_backward_weight(r->g2b, r->hb, gw2, gb2, r2, C1, H - 2, W - 2, N, 1);
    conv_backward_input(r->g2p, r->w2o, h, act, gh, r1, C1, (C2 + 1) / 2, H - 2, W - 2, N, 1);
  } else {
    conv_backward_weight(g2, h, gw2, gb2, r2, C1, H - 2, W - 2, N, 0);
    conv_backward_input(g2, w2, h, act, gh, r1, C1, C2, H - 2, W - 2, N, 0);
  }
}

/* This thread's bf16 copies for second_gradients and first_gradients, made before the wait
 * that makes the team's whole: g2's channels r2 (unless g2 is NULL: pool_backward_bf16 made
 * them), h's r1, w2's rows r1 and x's channels r0. */
static void bf16_copies(Products b, const Rounded *r, const float *g2, const float *h,
                        const float *w2, const float *x, Range r0, Range r1, Range r2, int C0,
                        int C1, int C2, int H, int W, int N) {
#if HAS_BF16
  const int64_t m1 = (int64_t)(H - 2) * (W - 2) * N, m2 = (int64_t)(H - 4) * (W - 4) * N;
  if (b.second) {
    if (g2) {
      pair_maps(g2, r->g2p, r2, C2, m2);
      round_maps(g2, r->g2b, r2, m2);
    }
    round_maps(h, r->hb, r1, m1);
    pair_weights_out(w2, r->w2o, r1, C1, C2);
  }
  if (b.first) round_maps(x, r->xb, r0, (int64_t)H * W * N);
#endif
}

/* The first convolution's products of a backward pass, from gh, the gradient of its output
 * (this thread's channels r1 whole): r1 of its weight and bias gradients, then, unless gx is
 * NULL and after the team's wait, r0 of gx, the gradient of its input x. */
static void first_gradients(Share s, Products b, const Rounded *r, float *gh, const float *x,
                            const float *w1, float *gw1, float *gb1, float *gx, Range r0,
                            Range r1, int C0, int C1, int H, int W, int N) {
#if HAS_BF16
  if (b.first) {
    const int64_t m1 = (int64_t)(H - 2) * (W - 2) * N;
    round_maps(gh, r->ghb, r1, m1);
    conv_backward_weight(r->ghb, r->xb, gw1, gb1, r1, C0, H, W, N, 1);
    if (gx) {
      pair_maps(gh, r->ghp, r1, C1, m1);
      pair_weights_out(w1, r->w1o, r0, C0, C1);
      team_wait(s); /* ghp whole */
      conv_backward_input(r->ghp, r->w1o, x, LINEAR, gx, r0, C0, (C1 + 1) / 2, H, W, N, 1);
    }
    return;
  }
#endif
  conv_backward_weight(gh, x, gw1, gb1, r1, C0, H, W, N, 0);
  if (gx) {
    team_wait(s); /* gh whole */
    conv_backward_input(gh, w1, x, LINEAR, gx, r0, C0, C1, H, W, N, 0);
  }
}

/* The weight and bias gradients of stack_forward from g, the gradient of its output, a
 * member at a time, and the gradient gx of its input x unless gx is NULL (a block that
 * reads another block's output): its first maps are those stack_forward kept in maps, or
 * recomputed into scratch where maps is NULL, and the gradients of both layers' outputs live
 * in scratch too, which holds stack_scratch(..., 0, 1) floats: h, gh, a, g2, then the bf16
 * copies. g is the gradient of what stack_forward passed on (of out * scale; bf16 where
 * rounded). bf16 and teams as stack_forward's. */
void stack_backward(const void *g, const float *scale, int rounded, const int32_t *idx,
                    const float *out, const float *x, const float *w1, const float *b1,
                    const float *w2, const float *b2, int act, int bf16, const float *maps,
                    float *gw1, float *gb1, float *gw2, float *gb2, float *gx, float *scratch,
                    int P, int C0, int C1, int C2, int H, int W, int N, int rank, Team *team) {
  const Share s = stack_share(rank, team, act);
  if (s.rank >= s.size) return;
  const Range r0 = part(s, C0), r1 = part(s, C1), r2 = part(s, C2);
  const int64_t image = (int64_t)C0 * H * W * N, first = (int64_t)C1 * (H - 2) * (W - 2) * N;
  const int64_t second = (int64_t)C2 * (H - 4) * (W - 4) * N;
  const int64_t pooled = (int64_t)C2 * ((H - 4) / 2) * ((W - 4) / 2) * N;
  const int softmax = act == SOFTMAX, elementwise = softmax ? LINEAR : act;
  const Products b = products_of(bf16, C0);
  const int64_t kept = softmax ? first + second : first;
  const Arriving arrived = {g, scale, rounded};
  float *gh = scratch + first, *room = gh + first, *g2 = room + second;
  const Rounded r = rounded_of(g2 + second, C0, C1, C2, H, W, N, b, 1);
  for (int p = 0; p < P; p++) {
    const float *xp = x + p * image, *w1p = w1 + (int64_t)p * C1 * C0 * 9;
    const float *w2p = w2 + (int64_t)p * C2 * C1 * 9;
    const float *h = maps ? maps + p * kept : scratch, *a = maps ? h + first : room;
    if (!maps)
      first_maps(s, b, &r, xp, w1p, b1 + (int64_t)p * C1, act, scratch, r0, r1, C0, C1, H, W, N);
    const Arriving ap = arriving_at(arrived, p * pooled);
    const float *outp = out + p * pooled;
    const int32_t *idxp = idx + p * pooled;
    /* the pooling's backward pass makes g2's bf16 copies, but for softmax's backward pass */
    const int copies = b.second && !softmax;
#if HAS_BF16
    if (copies)
      pool_backward_bf16(ap, idxp, outp, elementwise, r.g2b, r.g2p, r2, C2, H - 4, W - 4, N);
#endif
    if (!copies) pool_backward(ap, idxp, outp, elementwise, g2, r2, H - 4, W - 4, N);
    if (softmax) {
      if (!maps) second_softmax(b, &r, h, w2p, b2 + (int64_t)p * C2, room, C1, C2, H, W, N);
      softmax_backward(g2, a, C2, second / C2);
    }
    bf16_copies(b, &r, copies ? NULL : g2, h, w2p, xp, r0, r1, r2, C0, C1, C2, H, W, N);
    team_wait(s); /* h, g2 and their copies whole */
    second_gradients(b, &r, g2, h, w2p, elementwise, gw2 + (int64_t)p * C2 * C1 * 9,
                     gb2 + (int64_t)p * C2, gh, r1, r2, C1, C2, H, W, N);
    if (softmax) softmax_backward(gh, h, C1, first / C1);
    first_gradients(s, b, &r, gh, xp, w1p, gw1 + (int64_t)p * C1 * C0 * 9, gb1 + (int64_t)p * C1,
                    gx ? gx + p * image : NULL, r0, r1, C0, C1, H, W, N);
    team_wait(s); /* the next member's maps overwrite these */
  }
}

/* --- The batch-normalised stack: conv -> norm -> act -> conv -> norm -> pool -> act --------
 * The convolutions have no bias (the norms' shifts take its place). A norm's batch statistics
 * are a member's own, over its first count[p] images (the rest of the N are padding, which
 * neither the statistics nor any gradient sees); at evaluation (count NULL) it normalises by
 * the moving averages given instead. */
#define NORM_EPSILON 1e-3f /* Keras' BatchNormalization epsilon (functional.BN_EPSILON) */

/* Which lanes of the images n..n+15 are among the first count (real, not padding). */
INLINE v16i real_lanes(int n, int count) {
  const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return lane < (v16i){} + (count - n);
}

INLINE double lanes_sum_double(v16 v) {
  double s = 0.0;
  for (int l = 0; l < 16; l++) s += v[l];
  return s;
}

/* mean[c] and the biased variance var[c] of channels c of one member's maps z (C, Ho, Wo, N)
 * over its first count images, in two passes (the second about the mean), summed a row at a
 * time in float vectors and across rows in double. */
static void norm_statistics(const float *z, Range channels, int Ho, int Wo, int N, int count,
                            float *mean, float *var) {
  const double n = (double)count * Ho * Wo;
  for (int c = channels.lo; c < channels.hi; c++) {
    const float *zc = z + (int64_t)c * Ho * Wo * N;
    double sum = 0.0, squares = 0.0;
    for (int y = 0; y < Ho; y++) {
      v16 row = {};
      for (int x = 0; x < Wo; x++)
        for (int j = 0; j < count; j += 16)
          row += blend(real_lanes(j, count), LOAD(zc + ((int64_t)y * Wo + x) * N + j), (v16){});
      sum += lanes_sum_double(row);
    }
    const float m = (float)(sum / n);
    for (int y = 0; y < Ho; y++) {
      v16 row = {};
      for (int x = 0; x < Wo; x++)
        for (int j = 0; j < count; j += 16) {
          const v16 d = LOAD(zc + ((int64_t)y * Wo + x) * N + j) - m;
          row += blend(real_lanes(j, count), d * d, (v16){});
        }
      squares += lanes_sum_double(row);
    }
    mean[c] = m;
    var[c] = (float)(squares / n);
  }
}

/* a = act((z - mean) * gamma / sqrt(var + eps) + beta) in channels c of (C, M) maps, every
 * image (padding too: nothing reads its values); a may be z. */
INLINE void norm_apply_act(const float *z, const float *mean, const float *var,
                           const float *gamma, const float *beta, float *a, Range channels,
                           int64_t M, const int act) {
  for (int c = channels.lo; c < channels.hi; c++) {
    const float scale = gamma[c] / sqrtf(var[c] + NORM_EPSILON), m = mean[c], shift = beta[c];
    for (int64_t i = (int64_t)c * M; i < (int64_t)(c + 1) * M; i += 16)
      STORE(a + i, activate(act, (LOAD(z + i) - m) * scale + shift));
  }
}

/* norm_apply_act, softmax (over all C channels, so on one thread) included. */
static void norm_apply(const float *z, const float *mean, const float *var, const float *gamma,
                       const float *beta, int act, float *a, Range channels, int C, int64_t M) {
  DISPATCH(act == SOFTMAX ? LINEAR : act, norm_apply_act, z, mean, var, gamma, beta, a, channels,
           M)
  if (act == SOFTMAX) softmax_channels(a, C, M);
}

INLINE void activate_maps_act(float *a, int64_t M, const int act) {
  for (int64_t i = 0; i < M; i += 16) STORE(a + i, activate(act, LOAD(a + i)));
}

/* a = act(a) in place, over M floats (a multiple of 16); act elementwise. */
static void activate_maps(float *a, int64_t M, int act) {
  DISPATCH(act, activate_maps_act, a, M)
}

/* The gradient of a norm's input z from g, that of its output y = (z - mean) * scale + beta,
 * in place, in channels c, for batch statistics over the first count images (padding gets
 * 0); ggamma[c] and gbeta[c] are the sums of g * (z - mean) / sqrt(var + eps) and of g over
 * those images. */
static void norm_backward(float *g, const float *z, const float *mean, const float *var,
                          const float *gamma, float *ggamma, float *gbeta, Range channels, int Ho,
                          int Wo, int N, int count) {
  const double n = (double)count * Ho * Wo;
  const int64_t M = (int64_t)Ho * Wo * N;
  for (int c = channels.lo; c < channels.hi; c++) {
    float *gc = g + c * M;
    const float *zc = z + c * M;
    const float invstd = 1.0f / sqrtf(var[c] + NORM_EPSILON), m = mean[c];
    double sum = 0.0, dot = 0.0;
    for (int y = 0; y < Ho; y++) {
      v16 rs = {}, rd = {};
      for (int x = 0; x < Wo; x++)
        for (int j = 0; j < count; j += 16) {
          const int64_t o = ((int64_t)y * Wo + x) * N + j;
          const v16i real = real_lanes(j, count);
          const v16 gv = blend(real, LOAD(gc + o), (v16){});
          rs += gv;
          rd += gv * ((LOAD(zc + o) - m) * invstd);
        }
      sum += lanes_sum_double(rs);
      dot += lanes_sum_double(rd);
    }
    ggamma[c] = (float)dot;
    gbeta[c] = (float)sum;
    const float k = gamma[c] * invstd, mean_g = (float)(sum / n), mean_gx = (float)(dot / n);
    for (int64_t q = 0; q < (int64_t)Ho * Wo * N; q += N)
      for (int j = 0; j < N; j += 16) {
        const v16 xhat = (LOAD(zc + q + j) - m) * invstd;
        const v16 gz = k * (LOAD(gc + q + j) - mean_g - xhat * mean_gx);
        STORE(gc + q + j, j < count ? blend(real_lanes(j, count), gz, (v16){}) : (v16){});
      }
  }
}

/* The batch-normalised stack for each member: out = act(pool(norm2(conv(act(norm1(conv(x,
 * w1))), w2)))) (softmax: pooled after it), idx as conv_pool_forward's. Training (count not
 * NULL): each norm's batch statistics are written to mean1, var1 (P, C1) and mean2, var2
 * (P, C2), variances biased; evaluation: those hold the moving averages to normalise by.
 * scratch holds stack_scratch(..., 1, 0) floats. maps, unless NULL, keeps each member's
 * convolutions before their norms for norm_stack_backward: (P, C1 * (H-2) * (W-2) + C2 *
 * (H-4) * (W-4), N). passed, bf16 and teams as stack_forward's: a channel's statistics come
 * from the thread that computed the channel. */
void norm_stack_forward(const float *x, const float *w1, const float *g1, const float *be1,
                        const float *w2, const float *g2, const float *be2, int act, int bf16,
                        const int32_t *count, const float *scale, float *mean1, float *var1,
                        float *mean2, float *var2, float *out, void *passed, int rounded,
                        int32_t *idx, float *maps, float *scratch, int P, int C0, int C1, int C2,
                        int H, int W, int N, int rank, Team *team) {
  const Share s = stack_share(rank, team, act);
  if (s.rank >= s.size) return;
  const Range r0 = part(s, C0), r1 = part(s, C1), r2 = part(s, C2);
  const int64_t image = (int64_t)C0 * H * W * N, first = (int64_t)C1 * (H - 2) * (W - 2) * N;
  const int64_t second = (int64_t)C2 * (H - 4) * (W - 4) * N;
  const int64_t pooled = (int64_t)C2 * ((H - 4) / 2) * ((W - 4) / 2) * N, per = pooled / C2;
  const int elementwise = act == SOFTMAX ? LINEAR : act;
  const Products b = products_of(bf16, C0);
  float zero[C1 > C2 ? C1 : C2];
  for (int c = 0; c < (C1 > C2 ? C1 : C2); c++) zero[c] = 0.0f;
  float *h = scratch, *z = scratch + first;
  const Rounded r = rounded_of(z + second, C0, C1, C2, H, W, N, b, 0);
  for (int p = 0; p < P; p++) {
    float *m1 = mean1 + (int64_t)p * C1, *v1 = var1 + (int64_t)p * C1;
    float *m2 = mean2 + (int64_t)p * C2, *v2 = var2 + (int64_t)p * C2;
    float *outp = out + p * pooled;
    /* the convolutions before their norms: kept in maps, or normalised in place */
    float *z1 = maps ? maps + p * (first + second) : h, *z2 = maps ? z1 + first : z;
    conv_products(s, b.first, r.xp, r.w1f, x + p * image, w1 + (int64_t)p * C1 * C0 * 9, zero,
                  LINEAR, z1, r0, r1, C0, H, W, N);
    if (count) norm_statistics(z1, r1, H - 2, W - 2, N, count[p], m1, v1);
    norm_apply(z1, m1, v1, g1 + (int64_t)p * C1, be1 + (int64_t)p * C1, act, h, r1, C1,
               first / C1);
    team_wait(s); /* h whole */
    conv_products(s, b.second, r.hp, r.w2f, h, w2 + (int64_t)p * C2 * C1 * 9, zero, LINEAR, z2,
                  r1, r2, C1, H - 2, W - 2, N);
    if (count) norm_statistics(z2, r2, H - 4, W - 4, N, count[p], m2, v2);
    /* pooled, then activated (softmax: first), as pool_activate does */
    norm_apply(z2, m2, v2, g2 + (int64_t)p * C2, be2 + (int64_t)p * C2,
               act == SOFTMAX ? SOFTMAX : LINEAR, z, r2, C2, second / C2);
    pool_forward(z, outp, idx + p * pooled, r2, H - 4, W - 4, N);
    if (elementwise != LINEAR)
      activate_maps(outp + r2.lo * per, (r2.hi - r2.lo) * per, elementwise);
    if (passed) pass_maps(out, scale, passed, rounded, p * pooled, r2, per);
    team_wait(s); /* the next member's maps overwrite h */
  }
}

/* The gradients of norm_stack_forward (training) from g, that of its output: of the kernels,
 * of the norms' scales (gg1, gg2) and shifts (gbe1, gbe2), and of x unless gx is NULL, a
 * member at a time: the convolutions are those norm_stack_forward kept in maps, or
 * recomputed from x where maps is NULL. scratch holds stack_scratch(..., 1, 1) floats. g
 * (scale, rounded), bf16 and teams as stack_backward's. */
void norm_stack_backward(const void *g, const float *scale, int rounded, const int32_t *idx,
                         const float *out, const float *x, const float *w1, const float *g1,
                         const float *be1, const float *w2, const float *g2, const float *be2,
                         int act, int bf16, const int32_t *count, const float *mean1,
                         const float *var1, const float *mean2, const float *var2,
                         const float *maps, float *gw1, float *gg1, float *gbe1, float *gw2,
                         float *gg2, float *gbe2, float *gx, float *scratch, int P, int C0, int C1,
                         int C2, int H, int W, int N, int rank, Team *team) {
  const Share s = stack_share(rank, team, act);
  if (s.rank >= s.size) return;
  const Range r0 = part(s, C0), r1 = part(s, C1), r2 = part(s, C2);
  const int64_t image = (int64_t)C0 * H * W * N, first = (int64_t)C1 * (H - 2) * (W - 2) * N;
  const int64_t second = (int64_t)C2 * (H - 4) * (W - 4) * N;
  const int64_t pooled = (int64_t)C2 * ((H - 4) / 2) * ((W - 4) / 2) * N;
  const int softmax = act == SOFTMAX, elementwise = softmax ? LINEAR : act;
  const Products b = products_of(bf16, C0);
  const Arriving arrived = {g, scale, rounded};
  const int most = C1 > C2 ? C1 : C2;
  float zero[most], unused[most];
  for (int c = 0; c < most; c++) zero[c] = 0.0f;
  /* scratch: room for each convolution's maps (where maps does not hold them), h, gh, g2z, a,
   * then the bf16 copies */
  float *room1 = scratch, *h = room1 + first, *gh = h + first, *room2 = gh + first;
  float *g2z = room2 + second, *a = g2z + second;
  const Rounded r = rounded_of(a + second, C0, C1, C2, H, W, N, b, 1);
  for (int p = 0; p < P; p++) {
    const float *xp = x + p * image, *w1p = w1 + (int64_t)p * C1 * C0 * 9;
    const float *w2p = w2 + (int64_t)p * C2 * C1 * 9;
    const float *m1 = mean1 + (int64_t)p * C1, *v1 = var1 + (int64_t)p * C1;
    const float *m2 = mean2 + (int64_t)p * C2, *v2 = var2 + (int64_t)p * C2;
    const float *z1 = maps ? maps + p * (first + second) : room1;
    const float *z2 = maps ? z1 + first : room2;
    if (!maps)
      conv_products(s, b.first, r.xp, r.w1f, xp, w1p, zero, LINEAR, room1, r0, r1, C0, H, W, N);
    norm_apply(z1, m1, v1, g1 + (int64_t)p * C1, be1 + (int64_t)p * C1, act, h, r1, C1,
               first / C1);
    team_wait(s); /* h whole */
    if (!maps)
      conv_products(s, b.second, r.hp, r.w2f, h, w2p, zero, LINEAR, room2, r1, r2, C1, H - 2,
                    W - 2, N);
    pool_backward(arriving_at(arrived, p * pooled), idx + p * pooled, out + p * pooled,
                  elementwise, g2z, r2, H - 4, W - 4, N);
    if (softmax) {
      norm_apply(z2, m2, v2, g2 + (int64_t)p * C2, be2 + (int64_t)p * C2, SOFTMAX, a, r2, C2,
                 second / C2);
      softmax_backward(g2z, a, C2, second / C2);
    }
    norm_backward(g2z, z2, m2, v2, g2 + (int64_t)p * C2, gg2 + (int64_t)p * C2,
                  gbe2 + (int64_t)p * C2, r2, H - 4, W - 4, N, count[p]);
    bf16_copies(b, &r, g2z, h, w2p, xp, r0, r1, r2, C0, C1, C2, H, W, N);
    team_wait(s); /* g2z and the copies whole */
    second_gradients(b, &r, g2z, h, w2p, elementwise, gw2 + (int64_t)p * C2 * C1 * 9, unused, gh,
                     r1, r2, C1, C2, H, W, N);
    if (softmax) softmax_backward(gh, h, C1, first / C1);
    norm_backward(gh, z1, m1, v1, g1 + (int64_t)p * C1, gg1 + (int64_t)p * C1,
                  gbe1 + (int64_t)p * C1, r1, H - 2, W - 2, N, count[p]);
    first_gradients(s, b, &r, gh, xp, w1p, gw1 + (int64_t)p * C1 * C0 * 9, unused,
                    gx ? gx + p * image : NULL, r0, r1, C0, C1, H, W, N);
    team_wait(s); /* the next member's maps overwrite these */
  }
}

/* One stage of a 16x16 transpose: exchanges bit k (S = 2^k) of the row index with bit k of
 * the lane index. Row i (bit k clear) takes lanes with bit k set from row i + S, shifted
 * down by S; row i + S takes lanes with bit k clear from row i, shifted up. */
#define TRANSPOSE_STAGE(r, S)                                                \
  for (int i = 0; i < 16; i++) {                                              \
    if (i & (S)) continue;                                                    \
    const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; \
    const v16i other = ((lane & (S)) != 0) & (16 - (S));                      \
    const v16 a = r[i], b = r[i + (S)];                                       \
    r[i] = __builtin_shuffle(a, b, lane + other);                             \
    r[i + (S)] = __builtin_shuffle(a, b, lane + (S) + other);                 \
  }

/* r[t][l] = r[l][t]: sixteen vectors transposed in registers. */
INLINE void transpose16(v16 r[16]) {
  TRANSPOSE_STAGE(r, 1)
  TRANSPOSE_STAGE(r, 2)
  TRANSPOSE_STAGE(r, 4)
  TRANSPOSE_STAGE(r, 8)
}

/* Sixteen bytes from p as floats: with AVX-512 one widening load (GCC's conversion of a byte
 * vector builds it a byte at a time, which took most of the gather's time). */
typedef uint8_t v16b __attribute__((vector_size(16), aligned(1)));
INLINE v16 bytes_as_floats(const uint8_t *p) {
#ifdef __AVX512F__
  return (v16)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
#else
  return __builtin_convertvector(*(const v16b *)p, v16);
#endif
}

/* Sixteen pixels from q of image i of x, as floats: uint8 pixels (bytes) scaled by 1/255 as
 * images_to_tensor scales them, floats as they are. A vector division costs more than the
 * rest of the gather: k * (1/255) corrected by its residual, both fused multiply-adds (which
 * the compiler contracts a * b + c into), is the correctly rounded k / 255 for every byte k
 * (the tests check all 256); without fused multiply-adds, the division. */
INLINE v16 pixels_at(const void *x, int64_t i, int HW, int q, const int bytes) {
  if (!bytes) return LOAD((const float *)x + i * HW + q);
  const v16 k = bytes_as_floats((const uint8_t *)x + i * HW + q);
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  const v16 guess = k * (1.0f / 255.0f);
  return (k - guess * 255.0f) * (1.0f / 255.0f) + guess;
#else
  return k / 255.0f;
#endif
}

INLINE float pixel_at(const void *x, int64_t i, int HW, int q, const int bytes) {
  if (!bytes) return ((const float *)x)[i * HW + q];
  return (float)((const uint8_t *)x)[i * HW + q] / 255.0f;
}

/* out (P, HW, N) holds pixel q of image index[p, j] of x (M, HW) in out[p, q, j]; N is a
 * multiple of 16. Sixteen pixels of sixteen images are read as a vector each and transposed,
 * so that every load and store moves a whole vector. */
INLINE void gather(float *out, const void *x, const int64_t *index, int P, int HW, int N,
                   const int bytes) {
  for (int p = 0; p < P; p++) {
    for (int j0 = 0; j0 < N; j0 += 16) {
      const int64_t *ix = index + (int64_t)p * N + j0;
      float *o = out + (int64_t)p * HW * N + j0;
      int q0 = 0;
      for (; q0 + 16 <= HW; q0 += 16) {
        v16 r[16];
        for (int l = 0; l < 16; l++) r[l] = pixels_at(x, ix[l], HW, q0, bytes);
        transpose16(r);
        for (int t = 0; t < 16; t++) STORE(o + (int64_t)(q0 + t) * N, r[t]);
      }
      for (int q = q0; q < HW; q++)
        for (int l = 0; l < 16; l++) o[(int64_t)q * N + l] = pixel_at(x, ix[l], HW, q, bytes);
    }
  }
}

/* The images of each member's batch as stack_forward's input, from float images x. */
void gather_images(float *out, const float *x, const int64_t *index, int P, int HW, int N) {
  gather(out, x, index, P, HW, N, 0);
}

/* gather_images from uint8 pixels, scaled as they are gathered: the population keeps its
 * images at a byte a pixel, a quarter of the memory, and reads a quarter of the bytes. */
void gather_pixels(float *out, const uint8_t *x, const int64_t *index, int P, int HW, int N) {
  gather(out, x, index, P, HW, N, 1);
}

/* A 32-bit integer hash with full avalanche (Wellons' lowbias32). */
static inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

/* Inverted-dropout multipliers for P members, images innermost: out (P, F, N) holds in
 * out[p, k, j] scale[p] where element e = j * features[p] + k of the draw with 64-bit key
 * key[p] is kept, 0 where it is dropped, and 0 where k >= features[p] or j >= count[p].
 * Element e is kept when mix32(mix32(e ^ lo) ^ hi) >= threshold[p], lo and hi the halves of
 * the key: a pure function of key and element, so every engine draws the same masks in
 * whatever layout it wants them (kernels.py's dropout_scales_numpy is the reference). */
void dropout_scales(float *out, const uint64_t *key, const uint32_t *threshold,
                    const float *scale, const int32_t *count, const int32_t *features, int P,
                    int F, int N) {
  for (int p = 0; p < P; p++) {
    const uint32_t lo = (uint32_t)key[p], hi = (uint32_t)(key[p] >> 32), thr = threshold[p];
    const uint32_t f = (uint32_t)features[p];
    const float s = scale[p];
    for (int k = 0; k < F; k++) {
      float *o = out + ((int64_t)p * F + k) * N;
      const int n = k < features[p] ? count[p] : 0;
      for (int j = 0; j < n; j++)
        o[j] = mix32(mix32(((uint32_t)j * f + (uint32_t)k) ^ lo) ^ hi) >= thr ? s : 0.0f;
      for (int j = n; j < N; j++) o[j] = 0.0f;
    }
  }
}
