"""Rules for ops that act position by position: arithmetic, activations, normalisation, copies.

Normalisations whose statistics span spatial positions (group norm, layer norm over H and W,
instance norm, batch norm with batch statistics) keep the local geometry and mark the axes they
average over as *global context* (docs/conventions.md).
"""

from __future__ import annotations

import torch

from .masks import suppressed
from .plans import axes_of, plain, pointwise
from .registry import Digit, Plan, RuleContext, register_geometry

aten = torch.ops.aten

POINTWISE = """
add sub rsub mul div true_divide floor_divide remainder fmod pow neg abs sign sgn sqrt rsqrt exp exp2 expm1
log log2 log10 log1p reciprocal sin cos tan tanh sinh cosh asin acos atan atan2 sigmoid logit erf erfc erfinv
relu relu6 gelu silu mish hardswish hardsigmoid hardtanh leaky_relu elu selu celu softplus softshrink
hardshrink threshold prelu _prelu_kernel rrelu glu_pointwise clamp clamp_min clamp_max clip maximum minimum
fmax fmin where masked_fill lerp addcmul addcdiv square floor ceil round trunc frac nan_to_num
eq ne lt le gt ge logical_and logical_or logical_not logical_xor bitwise_and bitwise_or bitwise_not isnan
isinf isfinite alias detach clone contiguous _to_copy to lift_fresh dropout native_dropout feature_dropout
alpha_dropout copy type_as _conj resolve_conj resolve_neg positive
mul_ add_ sub_ div_ relu_ clamp_ clamp_min_ hardtanh_ leaky_relu_ elu_ sigmoid_ tanh_ silu_ hardswish_
hardsigmoid_ gelu_ mish_ threshold_ masked_fill_ pow_ neg_ abs_ sqrt_ exp_ rsqrt_ floor_ round_ copy_
""".split()


def pointwise_ops() -> list:
    return [getattr(aten, n) for n in dict.fromkeys(POINTWISE) if hasattr(aten, n)]


MASKING = ("aten.masked_fill", "aten.where")


def _pairs(ctx: RuleContext, ref) -> bool:
    """Whether a spatial axis lies on two dims of ``ref`` (the query and key dims of attention scores)."""
    labels = [a for dim in ctx.dims(ref) for a in axes_of(dim)]
    return len(labels) != len(set(labels))


def _scores(ctx: RuleContext, ref) -> bool:
    """Whether ``ref`` holds attention scores: an axis on the query and the key dim, or key digits."""
    return _pairs(ctx, ref) or any(isinstance(f, Digit) and f.pair for dim in ctx.dims(ref) for f in dim)


def _unread_mask(ctx: RuleContext, refs, plan: Plan) -> None:
    """A constant added to attention scores may be a mask (:mod:`.masks`). The softmax over the
    keys reads it where it can (:func:`.masks.masked_softmax`: it then reads q and kᵀ, not these
    scores, and the caveat stays behind); until then the scores' windows unite every key, and the
    caveat says so."""
    if not any(_scores(ctx, r) for r in refs):
        return
    for r in refs:
        if not ctx.constant(r):
            continue
        value = ctx.value(r)
        if value is None or suppressed(value, added=True).any():
            n = ctx.node
            plan.caveats.add(f"{n.name} in {n.scope or 'the model'}: an attention mask convlens does not read "
                             "here: every query-key pair counts as a path")


@register_geometry(pointwise_ops())
def elementwise(ctx: RuleContext) -> Plan | list[Plan]:
    refs = ctx.tensor_args()
    if ctx.node.name.startswith(MASKING) and any(_pairs(ctx, r) for r in refs):
        # a mask may remove query-key pairs (a causal one: the keys after each query), and masks are
        # not read yet: which keys a query sees is not known
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape), unsupported="masks attention scores (not read yet)")
    overwritten = refs[0] if ctx.node.name.startswith("aten.copy_") else None
    if overwritten is not None:
        refs = refs[1:]  # self is overwritten: the output is src, broadcast
    plan = pointwise(ctx, refs, per_channel=True)
    if ctx.node.name.startswith(("aten.add.", "aten.add_.")):
        _unread_mask(ctx, refs, plan)
    if overwritten is not None and overwritten not in refs:
        plan.unread.add(overwritten.id)
    if len(ctx.node.outputs) > 1:  # native_dropout returns (output, mask)
        return [plan] + [pointwise(ctx, refs, shape, per_channel=True) for shape in ctx.out_shapes()[1:]]
    return plan


FACTORY = """
empty empty_like zeros zeros_like ones ones_like full full_like new_empty new_zeros new_ones new_full
arange scalar_tensor rand rand_like randn randn_like randint empty_strided new_empty_strided fill fill_ zero_
""".split()


@register_geometry([getattr(aten, n) for n in FACTORY if hasattr(aten, n)])
def factory(ctx: RuleContext) -> Plan:
    """Values that do not depend on the input's data (only on its shape)."""
    return Plan(dims=tuple(plain(s) for s in ctx.out_shape), constant=True)


def _with_context(plan: Plan, ctx: RuleContext, x, dims: list[int]) -> Plan:
    plan.context.update(a for d in dims for a in axes_of(ctx.dims(x)[d]))
    return plan


def _stats(ctx: RuleContext, plan: Plan) -> list[Plan | None]:
    """Norm ops also return per-sample statistics; they are never read in inference."""
    return [plan] + [None] * (len(ctx.node.outputs) - 1)


@register_geometry([getattr(aten, n) for n in ("native_batch_norm", "_native_batch_norm_legit",
                                                          "_native_batch_norm_legit_no_training",
                                                          "_native_batch_norm_legit_functional",
                                                          "batch_norm", "cudnn_batch_norm") if hasattr(aten, n)])
def batch_norm(ctx: RuleContext):
    n = ctx.node
    x = n.arg(0, "input")
    plan = pointwise(ctx, [x], per_channel=True)  # (statistics per channel)
    training = "no_training" not in n.name and bool(n.arg(5, "training", False))
    if training:  # batch statistics (instance norm, BN in train mode) average over every position
        _with_context(plan, ctx, x, list(range(2, len(ctx.shape(x)))))
    return _stats(ctx, plan)


@register_geometry(aten.native_group_norm)
def group_norm(ctx: RuleContext):
    x = ctx.node.arg(0, "input")
    return _stats(ctx, _with_context(pointwise(ctx, [x]), ctx, x, list(range(2, len(ctx.shape(x))))))


@register_geometry(aten.native_layer_norm)
def layer_norm(ctx: RuleContext):
    x = ctx.node.arg(0, "input")
    rank = len(ctx.shape(x))
    normalized = len(ctx.node.arg(1, "normalized_shape"))
    return _stats(ctx, _with_context(pointwise(ctx, [x]), ctx, x, list(range(rank - normalized, rank))))
