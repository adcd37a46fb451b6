"""Peak activation memory of an inference forward, simulated on the captured graph.

Model: ``torch.no_grad()``; the inputs are alive from the start; every op allocates its outputs, then
every tensor whose last reader was that op is freed (model outputs live to the end). Views and
in-place ops alias their input's storage (from the op schema's alias annotations) and cost nothing.
Outputs that no op reads and that are not model outputs (max pooling's indices, batch norm's saved
statistics) are not counted: torch's CPU inference kernels do not materialise them. Parameters and
buffers are not activations and are not counted.
"""

from __future__ import annotations

from typing import Any

from .capture import VIEW_WRITE, Capture


def _aliases(op: Any, out_index: int) -> bool:
    if op == VIEW_WRITE:  # the parent of a view written in place: the same storage
        return True
    schema = getattr(op, "_schema", None)
    if schema is None or out_index >= len(schema.returns):
        return False
    return schema.returns[out_index].alias_info is not None


def peak_activation_bytes(cap: Capture) -> int:
    """Largest sum of live activation bytes at any point of the forward (input included)."""
    given = set(cap.inputs.values()) | {cap.input_id}  # (every tensor input the model was called with)
    storage: dict[int, int] = {t: t for t in given}
    size: dict[int, int] = {t: cap.tensors[t].nbytes for t in given}
    last_use: dict[int, int] = {}
    read: set[int] = set()
    for node in cap.nodes:
        for tid in node.inputs:
            read.add(tid)
    outputs = {tid for _, tid in cap.output_ids}
    for node in cap.nodes:
        activation_inputs = [t for t in node.inputs if t in storage]
        for i, tid in enumerate(node.outputs):
            if _aliases(node.op, i) and activation_inputs:
                storage[tid] = storage[activation_inputs[0]]
            elif tid in read or tid in outputs:
                storage[tid] = tid
                size[tid] = cap.tensors[tid].nbytes
        for tid in node.inputs:
            if tid in storage:
                last_use[storage[tid]] = node.index
    for tid in outputs:
        if tid in storage:
            last_use[storage[tid]] = len(cap.nodes)
    live = sum(size[t] for t in given)
    peak = live
    alive = set(given)
    for node in cap.nodes:
        for tid in node.outputs:
            s = storage.get(tid)
            if s is not None and s not in alive:
                alive.add(s)
                live += size[s]
        peak = max(peak, live)
        for s in [s for s in alive if last_use.get(s, node.index) <= node.index]:
            alive.discard(s)
            live -= size[s]
    return peak
