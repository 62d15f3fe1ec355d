/* One optimizer step for rows of a population's stacked parameters, in place: Keras 2.0's
 * seven rules in one pass over memory, where their torch form (deepnet/nn/optimizers.py, the
 * reference) makes a pass per operation. Row r is a member (its own learning rate lr[r]);
 * k holds the step's constants, computed by the rule's ``constants`` in that file's order;
 * s1 and s2 are the rule's slots in its ``slots`` order (NULL where it has fewer).
 * Compiled at first use by deepnet/engine/kernels.py, with the other C sources.
 */
#include <math.h>
#include <stdint.h>

/* The rules in the order of deepnet.nn.OPTIMIZERS (optimizer_bank.py's RULE_CODES) */
enum { SGD, RMSPROP, ADAGRAD, ADADELTA, ADAM, ADAMAX, NADAM };

#define EACH for (int64_t i = 0; i < n; i++)

static void step_row(int rule, float *restrict p, const float *restrict g, float *restrict s1,
                     float *restrict s2, float lr, const float *k, int64_t n) {
  switch (rule) {
  case SGD: { /* k: momentum, nesterov */
    const float mu = k[0];
    if (k[1] != 0.0f) {
      EACH { s1[i] = s1[i] * mu - lr * g[i]; p[i] += mu * s1[i] - lr * g[i]; }
    } else {
      EACH { s1[i] = s1[i] * mu - lr * g[i]; p[i] += s1[i]; }
    }
    break;
  }
  case RMSPROP: { /* k: rho, 1 - rho, eps */
    const float rho = k[0], rest = k[1], eps = k[2];
    EACH {
      s1[i] = s1[i] * rho + rest * (g[i] * g[i]);
      p[i] -= lr * g[i] / (sqrtf(s1[i]) + eps);
    }
    break;
  }
  case ADAGRAD: { /* k: eps */
    const float eps = k[0];
    EACH {
      s1[i] += g[i] * g[i];
      p[i] -= lr * g[i] / (sqrtf(s1[i]) + eps);
    }
    break;
  }
  case ADADELTA: { /* k: rho, 1 - rho, eps; s1: a, s2: d */
    const float rho = k[0], rest = k[1], eps = k[2];
    EACH {
      s1[i] = s1[i] * rho + rest * (g[i] * g[i]);
      const float u = g[i] * sqrtf(s2[i] + eps) / sqrtf(s1[i] + eps);
      p[i] -= lr * u;
      s2[i] = s2[i] * rho + rest * (u * u);
    }
    break;
  }
  case ADAM: { /* k: b1, 1 - b1, b2, 1 - b2, eps, sqrt(1 - b2^t), 1 - b1^t */
    const float b1 = k[0], rest1 = k[1], b2 = k[2], rest2 = k[3], eps = k[4];
    const float lr_t = lr * k[5] / k[6];
    EACH {
      s1[i] = s1[i] * b1 + rest1 * g[i];
      s2[i] = s2[i] * b2 + rest2 * (g[i] * g[i]);
      p[i] -= lr_t * s1[i] / (sqrtf(s2[i]) + eps);
    }
    break;
  }
  case ADAMAX: { /* k: b1, 1 - b1, b2, eps, 1 - b1^t */
    const float b1 = k[0], rest1 = k[1], b2 = k[2], eps = k[3], lr_t = lr / k[4];
    EACH {
      s1[i] = s1[i] * b1 + rest1 * g[i];
      s2[i] = fmaxf(s2[i] * b2, fabsf(g[i]));
      p[i] -= lr_t * s1[i] / (s2[i] + eps);
    }
    break;
  }
  case NADAM: { /* k: b1, 1 - b1, b2, 1 - b2, eps, g's share, m's share, 1 - b2^t */
    const float b1 = k[0], rest1 = k[1], b2 = k[2], rest2 = k[3], eps = k[4];
    const float g_share = k[5], m_share = k[6], bias2 = k[7];
    EACH {
      s1[i] = s1[i] * b1 + rest1 * g[i];
      s2[i] = s2[i] * b2 + rest2 * (g[i] * g[i]);
      const float m_bar = g[i] * g_share + s1[i] * m_share;
      p[i] -= lr * m_bar / (sqrtf(s2[i] / bias2) + eps);
    }
    break;
  }
  }
}

/* Rows 0..rows-1 of (rows, n) parameters p, gradients g and slots s1, s2 */
void optimizer_step(float *p, const float *g, float *s1, float *s2, const float *lr,
                    const float *k, int rule, int rows, int n) {
  for (int r = 0; r < rows; r++) {
    const int64_t o = (int64_t)r * n;
    step_row(rule, p + o, g + o, s1 ? s1 + o : 0, s2 ? s2 + o : 0, lr[r], k, n);
  }
}
