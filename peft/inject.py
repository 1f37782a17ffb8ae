"""with_lora / with_ia3: PEFT layers injected into any Flax linen model by intercepting calls.

The model is not rewritten: `nn.intercept_methods` catches each call of an `nn.Dense`,
`nn.DenseGeneral` or `nn.Einsum` whose module path the config targets, and adds the method's
parameters inside that layer's own scope (`…/query/lora/{a,b}` beside `…/query/kernel`).
"""

import inspect

import flax.linen as nn

from peft import linear
from peft.dora import dora_layer
from peft.ia3 import IA3Config, ia3_layer
from peft.lora import LoraConfig, check_targets, is_target, lora_layer

PeftMethod = LoraConfig | IA3Config


def _lora(config: LoraConfig, call, next_fun, args, kwargs, training: bool):
    out = next_fun(*args, **kwargs)
    layer = dora_layer if config.use_dora else lora_layer
    return layer(config, call, out, args[0] if args else kwargs["inputs"], training)


def _ia3(config: IA3Config, call, next_fun, args, kwargs, training: bool):
    return ia3_layer(config, call, next_fun, args, kwargs)


LAYERS = {LoraConfig: _lora, IA3Config: _ia3}


class Peft(nn.Module):
    """`wrapped` with `peft` injected; same call signature, same parameter paths plus the
    method's. Attributes it lacks are read from `wrapped` (`model.num_labels`, …).

    Dropout (LoRA's) is active when the call says so: `deterministic=False` or `train=True`
    where the wrapped model takes one of them, else whenever a "dropout" rng is given.
    """

    wrapped: nn.Module
    peft: PeftMethod

    def setup(self):
        nn.share_scope(self, self.wrapped)  # wrapped's parameters stay at the root

    def __call__(self, *args, **kwargs):
        training = self._training(args, kwargs)
        seen = []  # every linear layer's path, to name them if a target matches none
        layer = LAYERS[type(self.peft)]

        def intercept(next_fun, call_args, call_kwargs, context):
            module = context.module
            if context.method_name != "__call__" or not isinstance(module, linear.LINEAR):
                return next_fun(*call_args, **call_kwargs)
            seen.append(module.path)
            if not is_target(self.peft, module.path):
                return next_fun(*call_args, **call_kwargs)
            call = linear.describe(module, call_args, call_kwargs)
            return layer(self.peft, call, next_fun, call_args, call_kwargs, training)

        with nn.intercept_methods(intercept):
            out = self.wrapped(*args, **kwargs)
        if self.is_initializing():
            check_targets(self.peft, seen)
        return out

    def _training(self, args, kwargs) -> bool:
        signature = inspect.signature(self.wrapped.__call__)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:  # the wrapped call itself will say what is wrong
            return self.has_rng("dropout")
        params = signature.parameters
        for name, means_training in (("deterministic", False), ("train", True)):
            if name in params:
                value = bound.arguments.get(name, params[name].default)
                return bool(value) == means_training
        return self.has_rng("dropout")

    def __getattr__(self, name):
        if name.startswith("_") or name in ("wrapped", "peft", "scope", "parent", "name"):
            return super().__getattr__(name)
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "wrapped" not in self.__dict__:
                raise
            return getattr(self.__dict__["wrapped"], name)


def with_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """`model` with LoRA (or DoRA, `config.use_dora`) factors on the linear layers `config`
    targets: same call signature; parameters gain `…/lora/a` [*in, rank], `…/lora/b`
    [rank, *out] (and DoRA's `…/lora/magnitude` [*out]) beside each targeted kernel.

    A target that matches no layer is an error at `init`. `merge_lora` folds the factors
    back, giving params for `model` itself.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"with_lora needs a LoraConfig, got {config!r}")
    return Peft(model, config)


def with_ia3(model: nn.Module, config: IA3Config) -> nn.Module:
    """`model` with (IA)³ vectors `…/ia3/scale` on the layers `config` targets; `merge_ia3`
    folds them back."""
    if not isinstance(config, IA3Config):
        raise TypeError(f"with_ia3 needs an IA3Config, got {config!r}")
    return Peft(model, config)
