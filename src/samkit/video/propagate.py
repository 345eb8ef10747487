"""Mask propagation through video frames and volume slices with an image SAM.

The mask an object has on one frame becomes its prompt on the next (the ``mode`` of
:class:`PropagationConfig`): the mask's box, moved by the object's last step and with some
slack; or points deep inside it; with or without its low-resolution logits as
``mask_input``. Other objects' masks inside that box get a background point each, so an
object does not take over its neighbour.

Each new mask is checked against the object's last good one: its predicted IoU, its IoU with
the last mask, its area change (an object at the picture's edge may grow or shrink fast: it
is entering or leaving) and its *likeness* (the image embedding pooled under the mask, less
the frame's mean, and its colour histogram, against the object on its prompted and its last
good frame). When the prompt's mask fails, the prompt's alternative masks are tried; when
all fail the object is *lost* on that frame. A lost object is searched for on the frames
after: the box it had on its last good frame and a grid of points are decoded, and the most
alike candidate that passes the checks brings it back, so an object may leave the picture
and come back. For volumes (:meth:`PropagationConfig.for_volumes`) only the last box is
searched, for two slices: an organ that ends does not reappear elsewhere.

Masks of different objects never overlap: each pixel goes to the object with the highest
logit, and an object carries on from the part it kept.

Propagation runs forward from each object's first prompted frame to the end (a later prompt
of the same object re-anchors it), then backward from that frame to the start. Each frame is
embedded once and yielded once; memory holds one frame's embedding and each object's last
mask, whatever the video's length (and, when objects are first prompted on different frames,
the masks of the frames between those prompts as RLE until the backward pass completes them).

Coordinates: points are (X, Y) pixels of the frame, boxes XYXY pixels, masks ``(H, W)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import torch

from samkit.errors import InputError

MODES = ("box", "box+mask", "points", "points+mask")


@dataclass
class Prompt:
    """A user prompt for one object on one frame.

    Attributes:
        points: ``(N, 2)`` (X, Y) pixels, or None.
        labels: ``(N,)`` 1 = foreground, 0 = background (default all 1).
        box: ``(4,)`` XYXY pixels, or None.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
            if self.labels is None:
                self.labels = np.ones(len(self.points), dtype=np.int64)
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
            if len(self.labels) != len(self.points):
                raise InputError(f"{len(self.points)} points but {len(self.labels)} labels")
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float64).reshape(4)
            if not (self.box[2] > self.box[0] and self.box[3] > self.box[1]):
                raise InputError(f"box {self.box.tolist()} must be X0,Y0,X1,Y1 with X1 > X0 "
                                 "and Y1 > Y0")
        if self.points is None and self.box is None:
            raise InputError("a prompt needs points or a box")


@dataclass
class PropagationConfig:
    """How a mask carries to the next frame and when an object counts as lost.

    Attributes:
        mode: The next frame's prompt: ``"box"`` (the mask's box), ``"box+mask"`` (and its
            low-res logits as ``mask_input``), ``"points"`` (``n_points`` points deep inside
            the mask) or ``"points+mask"``.
        n_points: Points for the points modes.
        box_margin: The box grows by this fraction of its size on each side (motion slack).
        min_score: Lost when the predicted IoU falls below this, or below 3/4 of the score
            the object's prompt got when that was lower (a hard object stays followed).
        min_iou_prev: Lost when the mask's IoU with the previous frame's falls below this.
        max_area_change: Lost when the area grows or shrinks by more than this factor.
        min_similarity: Lost when the mask's likeness to the object falls below this: the
            mean of the cosine of the image embedding pooled under the mask (less the
            frame's mean) and the Bhattacharyya coefficient of the colour histograms, against
            the object on its prompted frame or its last good frame.
        recover: Search for lost objects on later frames.
        recover_within: Search only this many frames after the loss (None: until found).
        search_grid: Points per side of the grid searched for a lost object (0: only its
            last good box, for objects that do not move far, such as organs in a volume).
        search_every: Search for a lost object on each of the first ``search_every`` frames
            after the loss, then on every ``search_every``-th frame. The search decodes the
            whole grid (with nano on a CPU, about half an encoder's time): for long videos
            where objects leave for good, 4 or 8 saves that on most frames, at the price of
            finding a returning object up to that many frames late (1: every frame).
    """

    mode: str = "box"
    n_points: int = 3
    box_margin: float = 0.03
    min_score: float = 0.5
    min_iou_prev: float = 0.2
    max_area_change: float = 3.0
    min_similarity: float = 0.7
    recover: bool = True
    recover_within: int | None = None
    search_grid: int = 8
    search_every: int = 1

    def for_volumes(self) -> PropagationConfig:
        """These settings for the slices of a volume: an object that ends does not come back
        elsewhere, so a lost object is looked for only in its last box, for two slices."""
        return replace(self, search_grid=0, recover_within=2)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_area_change < 1:
            raise InputError(f"max_area_change is a factor >= 1, got {self.max_area_change}")
        if self.search_every < 1 or self.search_grid < 0:
            raise InputError(f"search_every must be >= 1 and search_grid >= 0, got "
                             f"{self.search_every} and {self.search_grid}")


@dataclass
class FrameResult:
    """One frame's masks.

    Attributes:
        index: Frame index.
        masks: Object id -> ``(H, W)`` bool mask; masks of different objects do not overlap
            (a pixel goes to the object with the highest logit). Empty when lost.
        scores: Object id -> predicted IoU of the mask (0 when lost).
        status: Object id -> ``"prompted"``, ``"tracked"``, ``"recovered"`` or ``"lost"``.
    """

    index: int
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)


@dataclass
class _Track:
    """An object's state between frames."""

    mask: np.ndarray | None = None  # (H, W) bool, last good mask
    logits: np.ndarray | None = None  # (h, w) low-res logits of the last good mask
    low_area: float = 0.0  # its area on the low-res grid
    reference: tuple[np.ndarray, np.ndarray] | None = None  # appearance when prompted
    recent: tuple[np.ndarray, np.ndarray] | None = None  # appearance on the last good frame
    velocity: np.ndarray | None = None  # (2,) XY centroid step over the last two frames
    lost: bool = False
    lost_for: int = 0  # frames since it was lost
    prompt_score: float = 1.0  # predicted IoU of the mask its prompt gave


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool masks (1 when both are empty), over their joint box."""
    rows = np.flatnonzero(a.any(1) | b.any(1))
    if len(rows) == 0:
        return 1.0
    cols = np.flatnonzero(a.any(0) | b.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a, b = a[box], b[box]
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def _neighbour_points(track: _Track, others: list[_Track], box: np.ndarray | None
                      ) -> np.ndarray:
    """``(K, 2)`` XY points, one deep inside each other object's last mask where it lies in
    ``box`` (default: this object's last box) and not under this object's mask."""
    assert track.mask is not None
    if box is None:
        box = mask_box(track.mask, 0.1)
    if box is None:
        return np.zeros((0, 2))
    x0, y0 = int(box[0]), int(box[1])
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    points = []
    for other in others:
        if other.mask is None:
            continue
        crop = other.mask[y0:y1, x0:x1] & ~track.mask[y0:y1, x0:x1]
        if crop.sum() < 16:
            continue
        found = mask_points(crop, 1)
        if len(found):
            points.append(found[0] + (x0, y0))
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(X, Y) centre of a ``(H, W)`` bool mask (zeros when empty)."""
    box = mask_box(mask)
    if box is None:
        return np.zeros(2)
    x0, y0, x1, y1 = box.astype(int)
    m = cv2.moments(np.ascontiguousarray(mask[y0:y1, x0:x1]).view(np.uint8), binaryImage=True)
    return np.array([x0 + m["m10"] / m["m00"], y0 + m["m01"] / m["m00"]])


def _on_edge(mask: np.ndarray) -> bool:
    """Whether a ``(H, W)`` mask touches the picture's border."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def mask_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """The XYXY box around a ``(H, W)`` mask grown by ``margin`` of its size on each side,
    clipped to the frame; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(cols) == 0:
        return None
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    h, w = mask.shape
    return np.array([max(0, x0 - dx), max(0, y0 - dy), min(w, x1 + dx), min(h, y1 + dy)],
                    dtype=np.float64)


def mask_points(mask: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` (X, Y) points deep inside ``mask``, spread apart: the point farthest from
    the boundary first."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    peak = float(dist.max())
    points = []
    for _ in range(n):
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        if dist[y, x] <= 0 or (points and dist[y, x] < 0.3 * peak):
            break
        points.append((float(x), float(y)))
        cv2.circle(dist, (int(x), int(y)), max(1, int(0.8 * peak)), 0, -1)
    return np.array(points, dtype=np.float64).reshape(-1, 2)


class VideoPropagator:
    """Propagate prompted masks through frames with any SAM predictor.

    Args:
        predictor: A :class:`samkit.SamPredictor`, an ONNX Runtime
            :class:`~samkit.backends.onnxruntime.OnnxPredictor`, or a :class:`samkit.Sam`
            model (wrapped in a predictor).
        config: Prompt mode and the lost / recovery rules.
    """

    def __init__(self, predictor: Any, config: PropagationConfig | None = None) -> None:
        from samkit.predictor import as_predictor

        self.predictor = as_predictor(predictor)
        self.config = config or PropagationConfig()

    # -- public ----------------------------------------------------------------------------
    def propagate(self, frames: Any, prompts: dict[int, dict[int, Prompt]],
                  backward: bool = True) -> Iterator[FrameResult]:
        """Yield the masks of every frame from the first prompted one to the end, then (with
        ``backward``) from before the first prompted one back to frame 0.

        Args:
            frames: A :class:`samkit.io.video.FrameSource` (:func:`samkit.io.open_frames`),
                a sequence of ``(H, W, 3)`` uint8 frames, or any iterable of them (read once,
                forward only: no backward pass).
            prompts: ``{frame index: {object id: Prompt}}``; object ids are integers >= 1
                (the values of the label maps).
            backward: Also propagate from each object's first prompted frame toward frame 0.

        Yields:
            :class:`FrameResult` per frame, each frame once: frames from the last object's
            first prompt on in increasing order, then the earlier ones in decreasing order.
        """
        first = self._check_prompts(prompts)
        source = _as_source(frames)
        if source is None:  # a one-pass iterator
            yield from self._forward(enumerate(frames), prompts, first, held_until=-1,
                                     held={})
            return
        for index in prompts:
            source.check_index(index)
        start, last_start = min(first.values()), max(first.values())
        held: dict[int, FrameResult] = {}
        yield from self._forward(source.frames(start), prompts, first,
                                 held_until=last_start if backward else -1, held=held)
        if backward:
            yield from self._backward(source.frames(0, last_start, reverse=True), first,
                                      held)

    # -- passes ----------------------------------------------------------------------------
    @staticmethod
    def _check_prompts(prompts: dict[int, dict[int, Prompt]]) -> dict[int, int]:
        """Each object's first prompted frame."""
        if not prompts or not any(prompts.values()):
            raise InputError("no prompts: give at least one object a point or a box on a frame")
        first: dict[int, int] = {}
        for index in sorted(prompts):
            if int(index) < 0:
                raise InputError(f"frame index {index} is negative")
            for obj, prompt in prompts[index].items():
                if not isinstance(obj, (int, np.integer)) or obj < 1:
                    raise InputError(f"object ids are integers >= 1 (label-map values), got "
                                     f"{obj!r}")
                if not isinstance(prompt, Prompt):
                    raise InputError(f"prompts[{index}][{obj}] must be a samkit.video.Prompt")
                first.setdefault(int(obj), int(index))
        return first

    def _forward(self, frames: Iterable[tuple[int, np.ndarray]],
                 prompts: dict[int, dict[int, Prompt]], first: dict[int, int],
                 held_until: int, held: dict[int, FrameResult]) -> Iterator[FrameResult]:
        tracks: dict[int, _Track] = {}
        self._anchors: dict[int, _Track] = {}
        for index, frame in frames:
            if index < min(first.values()):
                continue
            self._set_frame(frame)
            todo = {obj: prompts.get(index, {}).get(obj) for obj in first
                    if first[obj] <= index}
            result = self._step(index, frame, todo, tracks)
            for obj in todo:
                if index == first[obj]:  # where the backward pass starts from
                    self._anchors[obj] = replace(tracks[obj])
            if index < held_until:  # objects first prompted later come in the backward pass
                held[index] = _pack(result)
            else:
                yield result

    def _backward(self, frames: Iterable[tuple[int, np.ndarray]], first: dict[int, int],
                  held: dict[int, FrameResult]) -> Iterator[FrameResult]:
        tracks = {obj: replace(self._anchors[obj]) for obj in first}
        for index, frame in frames:
            self._set_frame(frame)
            todo: dict[int, Prompt | None] = {obj: None for obj, f in first.items() if index < f}
            result = self._step(index, frame, todo, tracks)
            if index in held:
                result = _merge(_unpack(held.pop(index), frame.shape[:2]), result)
            yield result

    # -- one frame -------------------------------------------------------------------------
    def _step(self, index: int, frame: np.ndarray, todo: dict[int, Prompt | None],
              tracks: dict[int, _Track]) -> FrameResult:
        logits: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        status: dict[int, str] = {}
        size = frame.shape[:2]
        lost = []
        for obj, prompt in todo.items():
            track = tracks.setdefault(obj, _Track())
            if prompt is not None:
                logits[obj], scores[obj] = self._prompted(prompt, track, size)
                status[obj] = "prompted"
            elif track.lost:
                lost.append(obj)
            else:
                others = [t for o, t in tracks.items() if o != obj and o in todo and not t.lost]
                out = self._track(track, others)
                if out is None:
                    track.lost = True
                    lost.append(obj)
                    status[obj] = "lost"
                else:
                    logits[obj], scores[obj] = out
                    status[obj] = "tracked"
        for obj in lost:
            out = None
            track = tracks[obj]
            track.lost_for += 1
            cfg = self.config
            due = (track.lost_for <= cfg.search_every
                   or track.lost_for % cfg.search_every == 0)
            within = cfg.recover_within is None or track.lost_for <= cfg.recover_within
            if cfg.recover and within and due:
                taken = [logits[o] > self.predictor.mask_threshold for o in logits]
                out = self._search(track, taken)
            if out is None:
                status[obj], scores[obj] = "lost", 0.0
            else:
                logits[obj], scores[obj] = out
                status[obj] = "recovered"
        masks = _resolve(logits, size, self.predictor.mask_threshold, list(status))
        for obj in logits:  # where a neighbour won pixels, carry on from what is left
            if masks[obj].any():
                tracks[obj].mask = masks[obj]
        return FrameResult(index, masks, scores, status)

    def _prompted(self, prompt: Prompt, track: _Track, size: tuple[int, int]
                  ) -> tuple[np.ndarray, float]:
        single_click = prompt.box is None and prompt.points is not None and len(prompt.points) == 1
        logits, scores, low = self.predictor.predict(
            point_coords=prompt.points, point_labels=prompt.labels, box=prompt.box,
            multimask_output=single_click, return_logits=True)
        best = int(np.argmax(scores))
        self._accept(track, logits[best], low[best], reference=True)
        track.prompt_score = float(scores[best])
        return logits[best], float(scores[best])

    def _track(self, track: _Track, others: list[_Track]) -> tuple[np.ndarray, float] | None:
        """The object's mask on the current frame from its last one, or None when lost.
        ``others``: the other objects' states; one whose mask lay in this object's box gets
        a background point, so the object does not take its neighbour over."""
        cfg = self.config
        assert track.mask is not None and track.logits is not None
        if not track.mask.any():  # nothing to carry (an empty mask from its prompt)
            return None
        points = labels = box = None
        shift = np.zeros(2) if track.velocity is None else track.velocity
        if cfg.mode.startswith("box"):  # moved on as the object moved over the last frames
            # Without a step to go by (just prompted or found again), more slack.
            margin = cfg.box_margin if track.velocity is not None else 3 * cfg.box_margin
            box = mask_box(track.mask, margin)
            h, w = track.mask.shape
            box = np.clip(box + np.tile(shift, 2), 0, [w, h, w, h])
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:  # moved out of the picture
                return None
        else:
            points = mask_points(track.mask, cfg.n_points) + shift
            labels = np.ones(len(points), dtype=np.int64)
        negatives = _neighbour_points(track, others, box)
        if len(negatives):
            base = points if points is not None else np.zeros((0, 2))
            points = np.concatenate([base, negatives])
            labels = np.concatenate([np.ones(len(base), np.int64),
                                     np.zeros(len(negatives), np.int64)])
        mask_input = track.logits[None] if cfg.mode.endswith("+mask") else None
        # The prompt's own answer first (three candidates for points, one for a box); when
        # no candidate passes, the box's three alternative masks.
        tries = [cfg.mode.startswith("points")]
        if not tries[0]:
            tries.append(True)
        before = _centroid(track.mask)
        for multimask in tries:
            logits, scores, low = self.predictor.predict(
                point_coords=points, point_labels=labels, box=box, mask_input=mask_input,
                multimask_output=multimask, return_logits=True)
            best = self._pick(track, logits, scores, low)
            if best is not None:
                k, feature = best
                self._accept(track, logits[k], low[k], feature=feature)
                track.velocity = _centroid(track.mask) - before
                return logits[k], float(scores[k])
        return None

    def _pick(self, track: _Track, logits: np.ndarray, scores: np.ndarray, low: np.ndarray
              ) -> tuple[int, tuple[np.ndarray, np.ndarray]] | None:
        """Of candidate masks ``(C, H, W)`` logits, the one most like the object (its last
        mask and its looks) that passes the checks of :class:`PropagationConfig`, with its
        looks; None when none passes."""
        cfg = self.config
        assert track.mask is not None
        prev_area = int(track.mask.sum())
        min_score = min(cfg.min_score, 0.75 * track.prompt_score)
        passing = []
        for k in range(len(logits)):
            mask = logits[k] > self.predictor.mask_threshold
            area = int(mask.sum())
            change = max(area, 1) / max(prev_area, 1)
            # An object entering through the picture's edge may grow fast, one leaving shrink.
            grows_ok = change <= cfg.max_area_change or _on_edge(track.mask)
            shrinks_ok = change >= 1 / cfg.max_area_change or _on_edge(mask)
            iou = _iou(mask, track.mask)
            if (scores[k] >= min_score and area > 0 and iou >= cfg.min_iou_prev
                    and grows_ok and shrinks_ok):
                passing.append((k, iou))
        if not passing:
            return None
        looks = self._appearance(low[[k for k, _ in passing]])
        sims = self._similarity(track, looks)
        ranked = sorted(range(len(passing)),
                        key=lambda j: -(sims[j] + passing[j][1] + 0.1 * scores[passing[j][0]]))
        for j in ranked:
            if sims[j] >= cfg.min_similarity:
                return passing[j][0], (looks[0][j], looks[1][j])
        return None

    def _search(self, track: _Track, taken: list[np.ndarray]) -> tuple[np.ndarray, float] | None:
        """Look for a lost object: its last good box and a grid of points, decoded at low
        resolution; the candidate most like the object that passes the checks, or None."""
        cfg, p = self.config, self.predictor
        assert track.mask is not None and p.original_size is not None
        if not track.mask.any():
            return None
        h, w = p.original_size
        box = torch.as_tensor(p.transform.apply_boxes(mask_box(track.mask, cfg.box_margin)[None],
                                                      (h, w)), dtype=torch.float)
        low_box, sc_box = p.predict_low_res_torch(None, None, box, multimask_output=False)
        lows, scores_ = [low_box.flatten(0, 1).float().cpu()], [sc_box.flatten().float().cpu()]
        n = cfg.search_grid
        if n > 0:
            grid = np.stack(np.meshgrid((np.arange(n) + 0.5) * w / n,
                                        (np.arange(n) + 0.5) * h / n), -1).reshape(-1, 1, 2)
            coords = torch.as_tensor(p.transform.apply_coords(grid, (h, w)), dtype=torch.float)
            labels = torch.ones(len(grid), 1, dtype=torch.int)
            low_pts, sc_pts = p.predict_low_res_torch(coords, labels, multimask_output=True)
            lows.append(low_pts.flatten(0, 1).float().cpu())
            scores_.append(sc_pts.flatten().float().cpu())
        low, scores = torch.cat(lows), torch.cat(scores_)
        valid = self._valid(low.shape[-2:])
        fg = low[:, : valid[0], : valid[1]] > p.mask_threshold
        areas = fg.flatten(1).sum(1).float()
        change = areas.clamp(min=1) / max(track.low_area, 1.0)
        min_score = min(cfg.min_score, 0.75 * track.prompt_score)
        ok = (scores >= min_score) & (areas > 0) & (change >= 1 / cfg.max_area_change)
        if not _on_edge(track.mask):  # else it left the picture: it may come back larger
            ok &= change <= cfg.max_area_change
        if not bool(ok.any()):
            return None
        idx = torch.nonzero(ok).flatten()
        looks = self._appearance(low[idx].numpy())
        sims = self._similarity(track, looks)
        for j in np.argsort(-sims):
            if sims[j] < cfg.min_similarity:
                return None
            cand = low[idx[j]][None, None]
            full = p.postprocess_masks(cand, p.input_size, p.original_size)[0, 0].numpy()
            mask = full > p.mask_threshold
            if any(_iou(mask, t) > 0.5 or (mask & t).sum() > 0.5 * mask.sum() for t in taken):
                continue  # another object's mask on this frame
            self._accept(track, full, low[idx[j]].numpy(),
                         feature=(looks[0][j], looks[1][j]))
            return full, float(scores[idx[j]])
        return None

    # -- state and appearance --------------------------------------------------------------
    def _accept(self, track: _Track, logits: np.ndarray, low: np.ndarray,
                reference: bool = False,
                feature: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        track.mask = logits > self.predictor.mask_threshold
        track.logits = np.asarray(low, dtype=np.float32)
        valid = self._valid(low.shape[-2:])
        track.low_area = float((track.logits[: valid[0], : valid[1]]
                                > self.predictor.mask_threshold).sum())
        if feature is None:
            looks = self._appearance(track.logits[None])
            feature = (looks[0][0], looks[1][0])
        if reference or track.reference is None:
            track.reference = feature
        track.recent = feature
        track.lost = False
        track.lost_for = 0
        track.velocity = None  # set by the caller when the last frame was tracked too

    def _valid(self, low_size: tuple[int, ...]) -> tuple[int, int]:
        """The low-res rows and columns that cover the image (the rest is padding)."""
        p = self.predictor
        img = p.transform.target_length
        return (int(np.ceil(p.input_size[0] * low_size[0] / img)),
                int(np.ceil(p.input_size[1] * low_size[1] / img)))

    def _set_frame(self, frame: np.ndarray) -> None:
        """Embed ``frame``; what appearance needs of it is computed when first asked."""
        from samkit.io.image import to_rgb_uint8

        self._frame = to_rgb_uint8(frame)
        self.predictor.set_image(self._frame)
        self._frame_cues: tuple[torch.Tensor, np.ndarray] | None = None

    def _cues(self, low_size: tuple[int, ...]) -> tuple[torch.Tensor, np.ndarray]:
        """The current frame's embedding less its mean ``(C, g, g)``, and its pixels' colour
        bins on the low-res grid ``(h', w')`` (the part that covers the image)."""
        if self._frame_cues is None:
            emb = self.predictor.get_image_embedding()[0].float().cpu()
            vh, vw = self._valid(emb.shape[-2:])
            emb = emb - emb[:, :vh, :vw].mean((1, 2), keepdim=True)
            vh, vw = self._valid(low_size)
            small = cv2.resize(self._frame, (vw, vh), interpolation=cv2.INTER_AREA)
            self._frame_cues = emb, _colour_bins(small)
        return self._frame_cues

    def _appearance(self, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(K, h, w)`` low-res logits -> what each mask looks like: ``(K, C)`` unit vectors
        (the frame's embedding, less its mean, averaged under the mask) and ``(K, B)`` colour
        histograms (hue, saturation, value)."""
        emb, bins = self._cues(low.shape[-2:])
        fg = torch.as_tensor(np.asarray(low) > self.predictor.mask_threshold).float()
        vh, vw = bins.shape
        fg[:, vh:, :] = 0
        fg[:, :, vw:] = 0
        weights = torch.nn.functional.adaptive_avg_pool2d(fg[:, None], emb.shape[-2:])[:, 0]
        pooled = torch.einsum("khw,chw->kc", weights, emb)
        vectors = torch.nn.functional.normalize(pooled, dim=1).numpy()
        crop = fg[:, :vh, :vw].numpy().reshape(len(fg), -1)
        flat = bins.reshape(-1)
        hists = np.zeros((len(fg), COLOUR_BINS), np.float64)
        for k in range(len(fg)):
            hists[k] = np.bincount(flat, weights=crop[k], minlength=COLOUR_BINS)
        hists /= np.maximum(hists.sum(1, keepdims=True), 1e-9)
        return vectors, hists

    @staticmethod
    def _similarity(track: _Track, looks: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """``(K,)`` likeness to the object in [-0.5, 1]: the mean of the embedding cosine and
        the colour histograms' Bhattacharyya coefficient, against its prompted or its last
        good frame, whichever is closer."""
        vectors, hists = looks
        best = np.full(len(vectors), -np.inf)
        for ref in (track.reference, track.recent):
            if ref is not None:
                colour = np.sqrt(hists * ref[1][None]).sum(1)
                best = np.maximum(best, 0.5 * (vectors @ ref[0]) + 0.5 * colour)
        return best


HUES, SATURATIONS, VALUES = 8, 3, 12
COLOUR_BINS = HUES * SATURATIONS * VALUES


def _colour_bins(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` bin of 8 hues x 3 saturations x 12 values (fine
    in value: grey scans differ only there)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV).astype(np.int64)
    return ((hsv[..., 0] * HUES // 180) * SATURATIONS + hsv[..., 1] * SATURATIONS // 256
            ) * VALUES + hsv[..., 2] * VALUES // 256


# -- helpers -------------------------------------------------------------------------------
def _as_source(frames: Any) -> Any:
    """A frame source with ``frames(start, stop, reverse)``, ``read`` and ``check_index``, or
    None for a one-pass iterator."""
    from samkit.io.video import ArrayFrames, FrameSource

    if isinstance(frames, FrameSource):
        return frames
    if isinstance(frames, (Sequence, np.ndarray)):
        return ArrayFrames(frames)
    return None


def _resolve(logits: dict[int, np.ndarray], size: tuple[int, ...], threshold: float,
             objects: list[int]) -> dict[int, np.ndarray]:
    """Non-overlapping masks: each pixel to the object with the highest logit above
    ``threshold``; objects without logits get empty masks."""
    out = {obj: np.zeros(size, dtype=bool) for obj in objects}
    for obj, lg in logits.items():
        out[obj] = lg > threshold
    if len(logits) < 2:
        return out
    ids = list(logits)
    count = np.zeros(size, dtype=np.uint8)
    for obj in ids:
        count += out[obj]
    ys, xs = np.nonzero(count > 1)  # only contested pixels need the comparison
    if len(ys):
        winner = np.stack([logits[o][ys, xs] for o in ids]).argmax(0)
        for k, obj in enumerate(ids):
            out[obj][ys, xs] = winner == k
    return out


def _pack(result: FrameResult) -> FrameResult:
    from samkit.ops.rle import encode_coco_masks

    packed = FrameResult(result.index, {}, dict(result.scores), dict(result.status))
    for obj, mask in result.masks.items():
        packed.masks[obj] = encode_coco_masks(mask[None])[0]  # type: ignore[assignment]
    return packed


def _unpack(result: FrameResult, size: tuple[int, ...]) -> FrameResult:
    from samkit.ops.rle import decode_coco_rle

    masks = {obj: decode_coco_rle(rle).astype(bool) for obj, rle in result.masks.items()}
    return FrameResult(result.index, masks, result.scores, result.status)


def _merge(earlier: FrameResult, later: FrameResult) -> FrameResult:
    """One frame's masks from both passes; where they overlap the forward pass's stay."""
    taken = np.zeros_like(next(iter(later.masks.values()))) if later.masks else None
    for m in earlier.masks.values():
        taken = m.copy() if taken is None else taken | m
    merged = FrameResult(earlier.index, dict(earlier.masks), dict(earlier.scores),
                         dict(earlier.status))
    for obj, mask in later.masks.items():
        merged.masks[obj] = mask & ~taken if taken is not None else mask
        merged.scores[obj] = later.scores[obj]
        merged.status[obj] = later.status[obj]
    return merged
