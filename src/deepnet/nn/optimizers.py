"""The seven Keras 2.0 optimizers with Keras' defaults and Keras' update rules.

torch.optim differs from Keras in several defaults (RMSprop's rho, Adagrad's and
Adadelta's eps) and in where Adam and Adamax put eps; these classes follow Keras, as
written in docs/keras2-semantics.md. In each rule ``g`` is the gradient, ``t`` the
1-based step, and every accumulator starts at zero.

The rules are static and ``lr`` may be a tensor that broadcasts against the parameter, so
the population engine applies the same code to many members' stacked parameters at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer


class KerasOptimizer(Optimizer):
    """Base class: per-parameter state, a step counter, and one update rule per subclass."""

    hyper: ClassVar[dict[str, Any]]  # Keras' defaults, lr included
    slots: ClassVar[tuple[str, ...]]  # per-parameter accumulators, zero at the start

    def __init__(self, params: Iterable[torch.Tensor], lr: float | None = None, **hyper: Any):
        unknown = set(hyper) - set(self.hyper)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown arguments {sorted(unknown)}")
        defaults = {**self.hyper, **hyper}
        if lr is not None:
            defaults["lr"] = lr
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                for name in self.slots:
                    if name not in state:
                        state[name] = torch.zeros_like(p)
                self.update(p, p.grad, state, group)
        return loss

    @staticmethod
    def update(p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        """Apply this optimizer's rule to ``p`` in place; ``group["lr"]`` may be a tensor."""
        raise NotImplementedError


class SGD(KerasOptimizer):
    """v = mu*v - lr*g; p += v (nesterov: p += mu*v - lr*g)."""

    hyper: ClassVar = {"lr": 0.01, "momentum": 0.0, "nesterov": False}
    slots = ("v",)

    @staticmethod
    def update(p, g, state, group):
        lr, mu = group["lr"], group["momentum"]
        v = state["v"]
        v.mul_(mu).sub_(lr * g)
        if group["nesterov"]:
            p.add_(mu * v - lr * g)
        else:
            p.add_(v)


class RMSprop(KerasOptimizer):
    """a = rho*a + (1-rho)*g^2; p -= lr*g/(sqrt(a)+eps)."""

    hyper: ClassVar = {"lr": 0.001, "rho": 0.9, "eps": 1e-8}
    slots = ("a",)

    @staticmethod
    def update(p, g, state, group):
        a = state["a"]
        a.mul_(group["rho"]).addcmul_(g, g, value=1 - group["rho"])
        p.sub_(group["lr"] * g / a.sqrt().add_(group["eps"]))


class Adagrad(KerasOptimizer):
    """a += g^2; p -= lr*g/(sqrt(a)+eps)."""

    hyper: ClassVar = {"lr": 0.01, "eps": 1e-8}
    slots = ("a",)

    @staticmethod
    def update(p, g, state, group):
        a = state["a"]
        a.addcmul_(g, g)
        p.sub_(group["lr"] * g / a.sqrt().add_(group["eps"]))


class Adadelta(KerasOptimizer):
    """a = rho*a + (1-rho)*g^2; u = g*sqrt(d+eps)/sqrt(a+eps); p -= lr*u; d = rho*d+(1-rho)*u^2."""

    hyper: ClassVar = {"lr": 1.0, "rho": 0.95, "eps": 1e-8}
    slots = ("a", "d")

    @staticmethod
    def update(p, g, state, group):
        rho, eps = group["rho"], group["eps"]
        a, d = state["a"], state["d"]
        a.mul_(rho).addcmul_(g, g, value=1 - rho)
        u = g * (d + eps).sqrt_() / (a + eps).sqrt_()
        p.sub_(group["lr"] * u)
        d.mul_(rho).addcmul_(u, u, value=1 - rho)


class Adam(KerasOptimizer):
    """m, v as usual; p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps), eps on the raw sqrt(v)."""

    hyper: ClassVar = {"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8}
    slots = ("m", "v")

    @staticmethod
    def update(p, g, state, group):
        b1, b2, t = group["beta_1"], group["beta_2"], state["step"]
        m, v = state["m"], state["v"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        lr_t = group["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
        p.sub_(lr_t * m / v.sqrt().add_(group["eps"]))


class Adamax(KerasOptimizer):
    """m as Adam; u = max(b2*u, |g|); p -= lr/(1-b1^t) * m/(u+eps), eps outside the max."""

    hyper: ClassVar = {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8}
    slots = ("m", "u")

    @staticmethod
    def update(p, g, state, group):
        b1, b2, t = group["beta_1"], group["beta_2"], state["step"]
        m, u = state["m"], state["u"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        torch.maximum(u.mul_(b2), g.abs(), out=u)
        p.sub_(group["lr"] / (1 - b1**t) * m / (u + group["eps"]))


class Nadam(KerasOptimizer):
    """Adam with Nesterov momentum and Keras' momentum schedule (= torch NAdam, decay 4e-3)."""

    hyper: ClassVar = {
        "lr": 0.002,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "eps": 1e-8,
        "schedule_decay": 0.004,
    }
    slots = ("m", "v")

    @staticmethod
    def update(p, g, state, group):
        b1, b2, t, decay = group["beta_1"], group["beta_2"], state["step"], group["schedule_decay"]
        m, v = state["m"], state["v"]
        mu_t = b1 * (1 - 0.5 * 0.96 ** (t * decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * decay))
        schedule = state.get("m_schedule", 1.0) * mu_t
        state["m_schedule"] = schedule
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        # m_bar = (1-mu_t) * g/(1-schedule) + mu_next * m/(1-schedule*mu_next)
        m_bar = g * ((1 - mu_t) / (1 - schedule)) + m * (mu_next / (1 - schedule * mu_next))
        denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
        p.sub_(group["lr"] * m_bar / denom)


OPTIMIZERS: dict[str, type[KerasOptimizer]] = {
    cls.__name__: cls for cls in (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam)
}
