"""Per-object memory bank of the video tracker: what earlier frames left, and what a frame reads of it.

One bank per tracked object, owned by the caller (SAM 2's video predictor keeps a dict of every frame's
outputs; this is a typed object that keeps only what can still be read). Each frame the tracker has seen
leaves a `FrameMemory`: the memory-encoder output and its position encoding, the object pointer, the
object-score logit, whether it is a conditioning frame (prompted, or re-conditioned by the caller), and its
index.

What frame t reads (`MemoryBank.read`; the rules of the official SAM 2/3 tracker, which transformers'
`Sam3TrackerVideoModel` follows), tracking forward -- backward, "earlier" means later frames and the
distances are mirrored:
- spatial memories: up to `max_cond_frames_in_attn` (4) conditioning frames -- the closest one before t, the
  closest one at or after t, then the temporally closest others -- all with temporal encoding row
  `num_maskmem - 1`; then the frames t-6 .. t-1 (`num_maskmem - 1` of them), row = distance - 1, taken from
  the non-conditioning memories or, failing that, from a conditioning frame not selected above;
- object pointers: those of the selected conditioning frames at or before t (distance t - c), then those of
  the frames t-1 .. t-(P-1) found the same way, with P = min(num_frames, `max_obj_ptrs_in_encoder` = 16), or
  16 when streaming. The tracker encodes each distance with a 1-D sine of distance / (P - 1).
Not reproduced, on purpose: transformers 5.17 takes pointers from *all* conditioning frames at or before t
(not only the selected ones) and does not fall back to unselected ones for recent pointers; the two rules
agree while an object has at most 4 conditioning frames. SAM 3's optional "memory selection" (SAM2Long-style
filtering of recent frames by score) is not applied either: transformers 5.17 does not compute it.

Bound: conditioning memories are kept (one per prompted or re-conditioned frame); `max_conditioning_frames`
caps them, dropping the one farthest from the newest, which changes outputs only if that frame would still
have been read. A non-conditioning memory is dropped as soon as no next step (either direction) can read it:
adding a tracked frame n keeps the pointers of tracked frames within max(P, num_maskmem) - 2 of n and the
features of those within num_maskmem - 2. Tracking in one direction the bank thus holds, however long the
video, the conditioning memories + P - 1 recent pointers, of which num_maskmem - 1 = 6 carry features (for
the released model: 6 + #conditioning feature maps of 64 x 72 x 72 in bfloat16, 0.66 MB each, one shared
position encoding, and at most 15 + #conditioning pointers of 256 floats). Unlike transformers' session,
which keeps every frame, a backward pass after a forward pass does not see the forward pass's memories
beyond that reach; `drop_recent` starts such a pass from the conditioning memories alone.

Memory features are stored in `memory_dtype`, bfloat16 by default as SAM 2/3 and transformers store them
(the rounding shows in the propagated logits at about 1e-3 relative; pass torch.float32 to keep them
exact). Position encodings and pointers keep their dtype.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FrameMemory:
    """What one frame leaves in an object's memory.

    features, pos: [1, memory_dim, g, g] memory-encoder output and its sine position encoding (None once the
    frame is out of the spatial window and only its pointer can still be read); object_pointer: [1, C];
    object_score_logit: [1, 1]; is_conditioning: the frame had prompts (points, box or mask) or was
    re-conditioned, so it is read as a conditioning memory.
    """

    frame_idx: int
    is_conditioning: bool
    features: torch.Tensor | None
    pos: torch.Tensor | None
    object_pointer: torch.Tensor
    object_score_logit: torch.Tensor


@dataclass(frozen=True)
class MemoryReadout:
    """What one frame reads from a bank.

    spatial: (temporal distance, memory) pairs, conditioning frames first with distance 0, then recent
    frames oldest first; pointers: (signed frame distance, pointer [1, C]) pairs; pointer_range: P - 1, the
    distance that the pointers' temporal encoding normalises by.
    """

    spatial: list[tuple[int, FrameMemory]]
    pointers: list[tuple[int, torch.Tensor]]
    pointer_range: int


class MemoryBank:
    """The memories of one object, bounded as described in the module docstring.

    The window sizes default to the released model's (`Tracker.new_memory_bank` takes the tracker's).
    num_frames: the video's length if known (the pointer window P is then min(num_frames, 16), as in the
    reference for a loaded video), None when streaming; memory_dtype: storage dtype of the memory features
    (None keeps theirs); max_conditioning_frames: None keeps every conditioning memory.
    """

    def __init__(
        self,
        num_maskmem: int = 7,
        max_cond_frames_in_attn: int = 4,
        max_obj_ptrs_in_encoder: int = 16,
        num_frames: int | None = None,
        memory_dtype: torch.dtype | None = torch.bfloat16,
        max_conditioning_frames: int | None = None,
    ) -> None:
        if max_conditioning_frames is not None and max_conditioning_frames < 1:
            raise ValueError(f"max_conditioning_frames must be >= 1 or None, got {max_conditioning_frames}")
        self.num_maskmem = num_maskmem
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.num_frames = num_frames
        self.memory_dtype = memory_dtype
        self.max_conditioning_frames = max_conditioning_frames
        # P: a frame reads the pointers of the recent frames up to P - 1 away (plus conditioning frames')
        self.pointer_window = min(num_frames or max_obj_ptrs_in_encoder, max_obj_ptrs_in_encoder)
        # insertion-ordered like the reference's dicts, so that ties in the closest-frame choice break alike
        self._conditioning: dict[int, FrameMemory] = {}
        self._recent: dict[int, FrameMemory] = {}
        self._pos: torch.Tensor | None = None  # the position encoding, the same for every frame: one copy

    # contents -----------------------------------------------------------------------------------------------

    @property
    def conditioning_frames(self) -> list[int]:
        return sorted(self._conditioning)

    @property
    def recent_frames(self) -> list[int]:
        """Frames with a non-conditioning memory (features or only a pointer)."""
        return sorted(self._recent)

    def memories(self) -> list[FrameMemory]:
        """Every stored memory, by frame."""
        return sorted([*self._conditioning.values(), *self._recent.values()], key=lambda m: m.frame_idx)

    def get(self, frame_idx: int) -> FrameMemory | None:
        return self._conditioning.get(frame_idx, self._recent.get(frame_idx))

    def __len__(self) -> int:
        return len(self._conditioning) + len(self._recent)

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._conditioning or frame_idx in self._recent

    # updates ------------------------------------------------------------------------------------------------

    def add(self, memory: FrameMemory) -> None:
        """Store a frame's memory (replacing any earlier one of that frame); drop what is out of reach."""
        if memory.features is not None and self.memory_dtype is not None:
            memory = dataclasses.replace(memory, features=memory.features.to(self.memory_dtype))
        memory = self._share_pos(memory)
        frame = memory.frame_idx
        if memory.is_conditioning:
            self._recent.pop(frame, None)
            self._conditioning[frame] = memory
            self._cap_conditioning(frame)
        else:
            self._conditioning.pop(frame, None)
            self._recent[frame] = memory
            self._prune_recent(frame)

    def _share_pos(self, memory: FrameMemory) -> FrameMemory:
        pos, shared = memory.pos, self._pos
        if pos is None:
            return memory
        if shared is not None and pos.shape == shared.shape and torch.equal(pos, shared):
            return dataclasses.replace(memory, pos=shared)
        self._pos = pos
        return memory

    def remove_frame(self, frame_idx: int) -> None:
        """Forget one frame's memory (e.g. the prompts of that frame were withdrawn)."""
        self._conditioning.pop(frame_idx, None)
        self._recent.pop(frame_idx, None)

    def drop_recent(self) -> None:
        """Keep only the conditioning memories, e.g. to track backward from where a forward pass began."""
        self._recent.clear()

    def _cap_conditioning(self, newest: int) -> None:
        cap = self.max_conditioning_frames
        while cap is not None and len(self._conditioning) > cap:
            farthest = max(self._conditioning, key=lambda t: abs(t - newest))
            del self._conditioning[farthest]

    def _prune_recent(self, newest: int) -> None:
        """Drop memories that the next step (at newest +- 1, either direction) cannot read.

        Only tracked (non-conditioning) frames move the window: a prompt on a distant frame leaves it
        alone."""
        spatial_reach = self.num_maskmem - 2
        reach = max(spatial_reach, self.pointer_window - 2)
        for frame, memory in list(self._recent.items()):
            distance = abs(frame - newest)
            if distance > reach:
                del self._recent[frame]
            elif distance > spatial_reach and memory.features is not None:
                self._recent[frame] = dataclasses.replace(memory, features=None, pos=None)

    # reading ------------------------------------------------------------------------------------------------

    def read(self, frame_idx: int, reverse: bool = False) -> MemoryReadout:
        """The memories frame `frame_idx` attends to when tracking forward (or backward with `reverse`)."""
        selected, unselected = self._closest_conditioning(frame_idx)
        step = 1 if reverse else -1  # from the current frame towards the frames already tracked

        def recent(frame: int) -> FrameMemory | None:
            return self._recent.get(frame, unselected.get(frame))

        spatial: list[tuple[int, FrameMemory]] = [(0, memory) for memory in selected.values()]
        for distance in range(self.num_maskmem - 1, 0, -1):
            memory = recent(frame_idx + step * distance)
            if memory is not None and memory.features is not None:
                spatial.append((distance, memory))

        # official rule: pointers of the *selected* conditioning frames on the tracked side (transformers 5.17
        # takes them from all conditioning frames; the two agree up to max_cond_frames_in_attn of them)
        pointers = [
            ((frame_idx - t) * -step, memory.object_pointer)
            for t, memory in selected.items()
            if (t >= frame_idx if reverse else t <= frame_idx)
        ]
        for distance in range(1, self.pointer_window):
            frame = frame_idx + step * distance
            if frame < 0 or (self.num_frames is not None and frame >= self.num_frames):
                break
            memory = recent(frame)
            if memory is not None:
                pointers.append((distance, memory.object_pointer))
        return MemoryReadout(spatial, pointers, max(self.pointer_window - 1, 1))

    def _closest_conditioning(self, frame_idx: int) -> tuple[dict[int, FrameMemory], dict[int, FrameMemory]]:
        """(selected, unselected) conditioning memories: the closest before, the closest at or after, then the
        temporally closest others, up to `max_cond_frames_in_attn`."""
        memories = self._conditioning
        if len(memories) <= self.max_cond_frames_in_attn:
            return dict(memories), {}
        chosen = []
        before = [t for t in memories if t < frame_idx]
        after = [t for t in memories if t >= frame_idx]
        if before:
            chosen.append(max(before))
        if after:
            chosen.append(min(after))
        others = sorted((t for t in memories if t not in chosen), key=lambda t: abs(t - frame_idx))
        chosen += others[: self.max_cond_frames_in_attn - len(chosen)]
        selected = {t: memories[t] for t in chosen}
        return selected, {t: m for t, m in memories.items() if t not in selected}


def pointer_temporal_encoding(
    distances: torch.Tensor, dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """1-D sine encoding of normalised frame distances: [N] -> [N, dim], [sin | cos] halves (not interleaved).

    Frequencies are temperature ** (2 * (i // 2) / (dim / 2)) for i < dim / 2, as in SAM 2's `get_1d_sine_pe`
    (consecutive channels share a frequency).
    """
    half = dim // 2
    exponent = 2 * (torch.arange(half, device=distances.device, dtype=torch.float32) // 2) / half
    angles = distances.float()[:, None] / temperature**exponent
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def split_pointer_tokens(pointers: torch.Tensor, token_dim: int) -> torch.Tensor:
    """[N, C] pointers -> [N * C / token_dim, token_dim] tokens, each pointer's pieces consecutive."""
    num_pieces = pointers.shape[-1] // token_dim
    if num_pieces * token_dim != pointers.shape[-1]:
        width = pointers.shape[-1]
        raise ValueError(f"object pointers of width {width} do not split into {token_dim}-d tokens")
    return pointers.reshape(pointers.shape[0] * num_pieces, token_dim)

