"""Stage 3: the multimodal causal LM on the frozen encoder's real outputs. One loss, as Emu2's
predict-the-next-element: cross-entropy on text tokens marked for loss, plus MSE regression of the
next visual embedding at every slot of a generated image or video frame (read from the hidden
state one position earlier, through project_down). Batches hold one task each so that padding stays
small on a CPU; tasks are drawn with the mixture weights below."""
import os
import socket
import time
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from .common import Checkpoint, Log, cosine_lr, path, seed_all
from .data import Split
from .modules import CausalLM, LMConfig

# Few-shot gets half the steps: the induction behaviour needs ~10k episodes-batches to emerge
# (reference/emu2-tiny-calibration.md Part 3); the other tasks are learnt in far fewer.
MIXTURE = {"fewshot": 0.5, "vqa": 0.12, "caption": 0.06, "t2i": 0.08, "subject": 0.08, "grounded": 0.07, "video": 0.09}
BATCH_CAP = {"video": 32}
# Share of text→image examples trained without their prompt, so `<s>[IMG]` regresses the
# unconditional tokens that classifier-free guidance subtracts (Emu2's cached negative).
UNCOND_SHARE = 0.05
# The image summary at each `[/IMG]` (modules.ImageSummary; the manifest declares it).
IMAGE_SUMMARY = "attn"
# Decoder layers. 1.3.0 has 3: at full length, on one encoder and seed, the third layer lifted video
# 74.0 → 82.5%, VQA 88.5 → 96.5% and subject-driven 77.5 → 86.0%, not 4-shot (79.0 / 79.5%), for a
# ~1.4× longer LM stage (model card, "What changed from 1.2.0").
LAYERS = 3
# Noise on the teacher-forced inputs of generated slots: at inference the LM reads back its own
# (imperfect) regressions.
GEN_INPUT_NOISE = 0.1
# Share of generated slots whose input is the LM's own regression (from a no-grad teacher-forced
# pass of the same batch) instead of the noised target: at inference each slot reads back the LM's
# own, blurrier output, and a faint object read back must not be taken for "no object yet".
SELF_INPUT_SHARE = 0.5
# Share of video examples whose first k frames (k uniform in 1 … frames-1) are the LM's own
# free-running frames (no grad, KV cache, exactly as at inference) instead of the targets. Their
# regression loss then counts only frames k onward: the LM learns to continue, and steer back to
# the prompt's trajectory, from its own imperfect frames. (Teacher-forced, the LM predicts every
# frame of the held-out videos right; free-running, its errors compound from frame to frame.)
ROLLOUT_SHARE = 0.5
# Rollouts start at this step (recall steps included), as in the run that measured them: before the
# LM can draw a frame its own frames are noise, and each rollout costs a free-running pass (mixture
# steps 12–19% slower, measured on two machines).
ROLLOUT_FROM = 8800
# Where a rollout may end: "frame" (after k whole frames, as 1.3.0 trained), "token" (after any
# token but the last: mid-frame cuts too) or "first" (inside the first frame only: its first m
# tokens, m uniform in 1 … N-1, free-running, the loss on the rest). The rebuild of 2026-11-28 drew
# rightward clips' first frame at their destination (model card, "What falls short → video"):
# whole-frame rollouts never put the first frame's own tokens in the LM's hands. Tried as an 800-step
# video-heavy tail on that LM: "first" 72.5%, "frame" 73.5% (at TAIL_LR 5e-4: 76.0 / 77.0%), rightward
# first frames still at the destination in all (28–31 of 41), so "frame" stays; untried over a whole
# schedule.
ROLLOUT_CUT = "frame"
# Weight of a video's first frame in its regression loss, against 1 for every later frame (the
# weighted mean over the batch's regressed slots; 1 = plain MSE, as 1.3.0 trained). The first frame
# is the only one the prompt alone decides (later ones move it along); the 2026-11-28 rebuild drew
# rightward clips' first frame at the destination (video 64.0%, rightward 7.3%). 1.4.0 trains with 4:
# whole schedules on 1.3.0's encoder, seed 1234, eval split: with FEWSHOT_ATTR_LOSS 1.0 video 77.0%
# (rightward 80.5%), 4-shot 85.0%; alone video 80.0%, 4-shot 80.5% (model card, "What changed from
# 1.3.0"). With the auxiliary loss and plain MSE the same encoder and seed had scored video 49.0%.
# The training log's video loss is then the weighted one (not comparable with 1.3.0's logs).
VIDEO_FIRST_WEIGHT = 4.0
HOLDOUT = 1000
# The recall warm-up: RECALL_STEPS of text-only associative recall (`<s> red dax . blue wug . red` →
# `dax`) before the mixture, the stand-in for the text pretraining Emu2's LM inherits from LLaMA,
# whose induction heads its few-shot ability builds on (RecallEpisodes); they come on top of the
# stage's mixture steps. Without it the LM sat on the few-shot "copy any label" plateau for all of
# its steps (model card, "How the recipe was found").
RECALL_STEPS = 1500
# RECALL_SHARE of the mixture's batches stay recall, so the circuit stays in use while the images
# learn to address it. Off: the run with 0.03 scored text→image / subject-driven / video 79.5 / 60.0 /
# 23.5%, one without it 93.0 / 74.0 / 52.0% (model card, "How the recipe was found", step 3).
RECALL_SHARE = 0.0
# REPEAT_SHARE of few-shot episodes get an exact-copy query (Batcher.repeat_query): matching is
# trivial on these, so the image-to-label lookup gets a gradient from the first steps.
REPEAT_SHARE = 0.25
# The training forward runs everything but attention on the batch's real tokens only (modules.Packing):
# the same losses and gradients as the padded computation, to float rounding. `bench/lm_train_step.py`
# measures it against the padded one.
PACK = True
# Length-binned batches: a task's training rows, sorted by length, are cut into LENGTH_BINS bins
# of equal count; a batch draws its rows from one bin, picked with probability ∝ its size, so
# every row keeps its chance of being drawn but a batch's rows have similar lengths. Drawn
# uniformly (0, as 1.2.0 trained), padding is ~25% of few-shot tokens (episodes run 21–101) and
# ~36% of VQA ones at batch 64; with 16 bins, 2% and 4% (padded tokens per batch: few-shot 6,464 →
# 5,188, VQA 3,891 → 2,593). Rows that can carry no loss (0-shot episodes) are left out when
# binning: a bin of only those would have no gradient. Measured on a 2-core AVX2 EPYC (600 mixture
# steps, one core each, side by side; the loop's own rate at step 599): 2.28 → 2.79 steps/s, and
# 2.06 → 2.39 with rollouts. A full rebuild with 16 (model card, "What falls short → LM stage
# time"): LM stage 4,057 s on a 2-core AVX2 EPYC ~1.2× slower than the 1.2.0 build machine, but
# VQA 88.5% (1.2.0: 94.0) with shape and cell errors 1.2.0 did not make, so 1.2.0 stays as
# trained (0). Since then the LM's training forward skips padding everywhere but attention
# (modules.Packing), which takes most of that saving without changing what a batch holds.
LENGTH_BINS = 0
# The tasks binned when LENGTH_BINS > 0: "*" for all, else task names joined by "+" (e.g.
# "fewshot", so `lm_sweep.py --spec 'LENGTH_BINS=16,BINNED_TASKS=fewshot'`). Few-shot, half of
# the steps, holds most of the time saved (600 mixture steps side by side, loop rate at step 599:
# unbinned 2.78, few-shot only 3.20 / 3.27, every task 3.41 steps/s), and the other tasks then
# draw their batches as 1.2.0 did.
BINNED_TASKS = "*"
# An auxiliary loss on few-shot episodes (0 = off, as 1.3.0 trained; 1.0 in 1.4.0): a linear head, used only in
# training, reads the residual stream after layer FEWSHOT_ATTR_TAP (negative: counted from the last
# layer) at each label of the episode and predicts which of the attributes (shape, colour, size)
# are still consistent with every label shown so far (same value ⇔ same label, the rule of
# research/fewshot_ceiling.py's ideal learner), as a distribution over them (soft-target
# cross-entropy, weight FEWSHOT_ATTR_LOSS). Only labels after ≥ 2 demonstrations that rule out at
# least one attribute count. The LM answers a 4-shot query with a demonstration that shares its
# other attributes (model card, "What falls short → 4-shot"): the label positions, whose keys the
# query matches against, should know which attribute their label follows. Tried at 1.0 on 1.3.0's
# encoder: 4-shot 79.5 → 85.5%, video 82.5 → 49.0% (model card), so 1.3.0 trained without it. With
# VIDEO_FIRST_WEIGHT 4 the same encoder and seed kept video (77.0%) and 4-shot (85.0%): on in 1.4.0.
FEWSHOT_ATTR_LOSS = 1.0
FEWSHOT_ATTR_TAP = -2
FEWSHOT_ATTRS = ("shape", "color", "size")
# Few-shot episodes drawn by attribute, in proportion to the LM's own errors (0 = off, every
# training episode equally likely, as 1.4.0 trained). Runs of 1.4.0's recipe have each lost 4-shot
# on one attribute, a different one per run (model card, "Rebuild": colour 56.6% beside shape 86.6%
# and size 89.2%; 1.4.0 itself shape 76.8%), and the held-out probe shows it during training. At
# every probe from step FEWSHOT_ATTR_ADAPT_FROM on (recall steps counted), attribute a's share of
# the few-shot episodes becomes (1 − FEWSHOT_ATTR_ADAPT)/3 + FEWSHOT_ATTR_ADAPT · err_a / Σ err,
# err_a = 1 − the probe's 2- and 4-shot accuracy on a's held-out episodes (training split, never
# the eval split); within an attribute, episodes are drawn uniformly as before. One fresh-encoder
# run with it (model card, "Rebuild", 2026-11-29): its weak colour came back (4-shot colour 84.9%),
# 4-shot 84.0% against 81.5 / 79.5% for the two fresh-encoder rebuilds without it, at
# FEWSHOT_ATTR_ADAPT 0.5 with each probe's errors used alone. Its probe holds ~200 episodes per
# attribute, so the shares were noisy and had drifted back to uniform by the end while shape was
# still the weakest (4-shot shape 78.0%). So err_a is now an exponential average over the probes,
# FEWSHOT_ATTR_ADAPT_DECAY · the previous one + (1 − FEWSHOT_ATTR_ADAPT_DECAY) · this probe's
# (the first probe's own errors to start), and the adaptive part is 0.7. One whole rebuild.sh
# with that (model card, "Rebuild", twelfth session): colour, again the LM's early weak attribute,
# got 0.39–0.52 of the episodes and ended at 81.1%; but 4-shot was 80.5% on eval (84.5% on
# validation), and 84.2% on 1,000 fresh episodes, where 1.4.0's LM scores 86.3%. The next whole
# rebuild.sh, unchanged but on a Zen 5 (whose encoder is 1.3.0's, bit for bit), shipped as 1.5.0:
# 4-shot 87.5% on eval, 87.0% on validation, 87.7% on those 1,000 episodes.
FEWSHOT_ATTR_ADAPT = 0.7
FEWSHOT_ATTR_ADAPT_FROM = 4000
FEWSHOT_ATTR_ADAPT_DECAY = 0.5
# Snapshots of the LM's weights (`$EMU_TRAIN_DIR/snapshots/lm-<step>.pt`, the lm.pt format) every
# SNAPSHOT_EVERY steps from step SNAPSHOT_FROM on (recall steps counted; 0 = none), for choosing
# among the end of a run, or averaging it, on a validation split (research/snapshots.py --score).
# On since 1.5.0 (eight files, 2.9 MB each); they change nothing in training. 1.5.0's run: the
# final weights 4-shot 87.7% on 1,000 validation episodes, the means of the last 3 / 5 / 8
# snapshots 87.6 / 87.4 / 87.5%, so SNAPSHOT_AVERAGE stays 0.
SNAPSHOT_EVERY = 500
SNAPSHOT_FROM = 10500
# lm.pt is the mean of the run's last SNAPSHOT_AVERAGE snapshots (0: the final weights alone; the
# last snapshot is the final step's, so SNAPSHOT_EVERY must divide the step count).
SNAPSHOT_AVERAGE = 0
# A tail of TAIL_STEPS mixture steps after the schedule's end (0 = none), at its final learning rate,
# drawing tasks with MIXTURE's weights overridden by TAIL_MIXTURE (e.g. {"video": 0.3}).
TAIL_STEPS = 0
TAIL_MIXTURE: dict = {}
# The tail's own learning rate (0: the schedule's final one throughout): warmed up over its first 100
# steps to TAIL_LR, then a cosine back down to the schedule's final one, for a tail that must move
# the weights further than the floor allows (e.g. FEWSHOT_ATTR_LOSS switched on in the tail only).
# Tried as a 2,000-step tail with that loss on 1.3.0's LM (TAIL_LR 5e-4): 4-shot +2.5 points, video −5
# (model card, "What falls short → 4-shot").
TAIL_LR = 0.0
# bfloat16 autocast for the training forward (matmuls in bf16 with fp32 accumulation; weights,
# optimiser, norms, softmax and losses stay fp32): "off", "on", or "auto" = on where the CPU
# multiplies bf16 natively (AMX or AVX-512 BF16, through torch's oneDNN), off elsewhere (AVX2 only:
# emulated bf16 is slower than fp32). `bench/lm_train_step.py --compare precision` measures it.
AUTOCAST = "off"

# Data-parallel training (train_lm's `procs`) checkpoints every this many steps, all processes at the
# same step (~1–2 minutes of training).
DP_CHECKPOINT_EVERY = 250


def bf16_native() -> bool:
    """Whether this CPU has AMX-BF16 or AVX512-BF16 (Linux: /proc/cpuinfo's flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_on(device: str = "cpu") -> bool:
    """Whether AUTOCAST puts the training forward in bf16 on `device`."""
    assert AUTOCAST in ("off", "on", "auto"), f"AUTOCAST is off, on or auto, not {AUTOCAST!r}"
    return AUTOCAST == "on" or (AUTOCAST == "auto" and device == "cpu" and bf16_native())


def autocast(device: str = "cpu"):
    """The training forward's precision context (AUTOCAST). Without autocast's cache of cast weights:
    the self-input and rollout passes run under no_grad inside the same context, and the casts they
    cached carry no gradient, so the training pass that reused them left the generation tasks' weights
    untrained (a run with the cache: regression losses 1.3–1.4 at step 2,000 against 0.22–0.27 in fp32)."""
    return torch.autocast("cpu" if device == "cpu" else "cuda", dtype=torch.bfloat16, enabled=autocast_on(device),
                          cache_enabled=False)


class TaskData:
    def __init__(self, rows, special):
        self.ids = [np.asarray(r["ids"], dtype=np.int64) for r in rows]
        self.images = [np.asarray(r["images"], dtype=np.int64) for r in rows]
        self.gen = [np.asarray(r["gen"], dtype=bool) for r in rows]
        self.loss = [r["loss"] for r in rows]
        self.prompt = [r.get("prompt", 0) for r in rows]
        # The attribute a few-shot episode's labels name (the world writes it since 2026-11-29).
        self.attr = [r.get("attr") for r in rows]
        self.n = len(rows)


class Batcher:
    def __init__(self, split: Split, embeds: np.ndarray, tasks, seed: int):
        sp = split.special
        self.pad, self.bos, self.img, self.img_end = sp["[PAD]"], sp["<s>"], sp["[IMG]"], sp["[/IMG]"]
        self.slots = (sp["<image>"], sp["[gIMG]"])
        self.n_tok = split.tokens_per_image
        self.embeds = embeds
        self.data = {t: TaskData(split.examples(t), sp) for t in tasks}
        self.rng = np.random.default_rng(seed)
        self.attrs = None
        if FEWSHOT_ATTR_LOSS > 0 and "fewshot" in self.data:
            # Each image's (shape, colour, size) where it holds one object, else -1.
            one = lambda d: [d["objects"][0][a] for a in FEWSHOT_ATTRS] if len(d.get("objects", [])) == 1 else [-1] * len(FEWSHOT_ATTRS)  # noqa: E731
            self.attrs = np.array([one(d) for d in split.descriptions()], dtype=np.int64)
        binned = set(self.data) if BINNED_TASKS == "*" else set(BINNED_TASKS.split("+"))
        assert binned <= set(MIXTURE), f"BINNED_TASKS names unknown tasks: {sorted(binned - set(MIXTURE))}"
        self.bins = {t: self.length_bins(d) for t, d in self.data.items() if t in binned} if LENGTH_BINS > 0 else {}
        # FEWSHOT_ATTR_ADAPT: each attribute's training episodes, and their draw shares (None: as
        # the rows come, until the first probe that sets them).
        self.attr_p = None
        if FEWSHOT_ATTR_ADAPT > 0 and "fewshot" in self.data:
            assert "fewshot" not in self.bins, "FEWSHOT_ATTR_ADAPT draws few-shot rows by attribute, not by length bin"
            d = self.data["fewshot"]
            named = np.array(d.attr[: d.n - HOLDOUT], dtype=object)
            self.attr_rows = [np.nonzero(named == a)[0] for a in FEWSHOT_ATTRS]
            assert all(len(r) for r in self.attr_rows), \
                "FEWSHOT_ATTR_ADAPT needs few-shot rows that name their attribute (`attr`): regenerate the split with `world dataset`"

    @staticmethod
    def length_bins(d: TaskData):
        """The task's training rows that can carry a loss (their own, or a repeated query's: see
        repeat_query), by length, in LENGTH_BINS equal-count bins, and each bin's draw probability."""
        rows = [i for i in range(d.n - HOLDOUT)
                if len(d.loss[i]) or d.gen[i].any() or (REPEAT_SHARE > 0 and len(d.images[i]) >= 2)]
        rows.sort(key=lambda i: len(d.ids[i]))
        bins = [b for b in np.array_split(np.asarray(rows, dtype=np.int64), LENGTH_BINS) if len(b)]
        size = np.array([len(b) for b in bins], dtype=np.float64)
        return bins, size / size.sum()

    def build(self, task: str, rows, augment: bool = True):
        d = self.data[task]
        seqs, imgs, gens, spans = [], [], [], []
        for i in rows:
            ids, im, gen, sp = d.ids[i], d.images[i], d.gen[i], d.loss[i]
            if augment and task == "t2i" and self.rng.random() < UNCOND_SHARE:
                k = int(np.argmax(ids == self.img))
                ids = np.concatenate([ids[:1], ids[k:]])
            if REPEAT_SHARE > 0 and augment and task == "fewshot" and len(im) >= 2 and self.rng.random() < REPEAT_SHARE:
                ids, im, sp = self.repeat_query(ids, im, sp)
            seqs.append(ids); imgs.append(im); gens.append(gen); spans.append(sp)
        b, t = len(seqs), max(len(s) for s in seqs)
        input_ids = np.full((b, t), self.pad, dtype=np.int64)
        mask = np.zeros((b, t), dtype=np.int64)
        slot_pos, slot_src, reg_pos, reg_src, ce_pos, ce_tgt, end_pos = [], [], [], [], [], [], []
        attr_pos, attr_tgt, reg_w = [], [], []
        weigh_first = task == "video" and VIDEO_FIRST_WEIGHT != 1
        for r, (ids, im, gen, sp) in enumerate(zip(seqs, imgs, gens, spans)):
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
            pos = np.nonzero((ids == self.slots[0]) | (ids == self.slots[1]))[0]
            src = (im[:, None] * self.n_tok + np.arange(self.n_tok)[None]).reshape(-1)
            assert len(pos) == len(src), "visual slots and images disagree"
            slot_pos.append(r * t + pos); slot_src.append(src)
            # Each image's closing [/IMG] (absent only where a variant layout drops it: -1).
            after = pos[self.n_tok - 1:: self.n_tok] + 1
            closed = (after < len(ids)) & (ids[np.minimum(after, len(ids) - 1)] == self.img_end)
            end_pos.append(np.where(closed, r * t + after, -1))
            is_gen = np.repeat(gen, self.n_tok)
            reg_pos.append(r * t + pos[is_gen] - 1); reg_src.append(src[is_gen])
            if weigh_first:
                # VIDEO_FIRST_WEIGHT on the first frame's slots (the row's first n_tok regressed ones).
                w = np.ones(int(is_gen.sum()), dtype=np.float32)
                w[: self.n_tok] = VIDEO_FIRST_WEIGHT
                reg_w.append(w)
            for s, e in sp:
                ce_pos.append(r * t + np.arange(s, e) - 1); ce_tgt.append(ids[s:e])
            if self.attrs is not None and task == "fewshot":
                p, tg = self.consistent_attrs(ids, im)
                attr_pos.append(r * t + p); attr_tgt.append(tg)
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
        flat = self.embeds.reshape(-1, self.embeds.shape[-1])
        slot_src, reg_src = cat(slot_src), cat(reg_src)
        gen_slot = np.isin(cat(slot_pos), cat(reg_pos) + 1)
        return {
            "input_ids": torch.from_numpy(input_ids), "mask": torch.from_numpy(mask),
            "slot_pos": torch.from_numpy(cat(slot_pos)), "slot_vec": torch.from_numpy(np.asarray(flat[slot_src])),
            "gen_slot": torch.from_numpy(gen_slot), "end_pos": torch.from_numpy(cat(end_pos)),
            "reg_pos": torch.from_numpy(cat(reg_pos)), "reg_vec": torch.from_numpy(np.asarray(flat[reg_src])),
            "ce_pos": torch.from_numpy(cat(ce_pos)), "ce_tgt": torch.from_numpy(cat(ce_tgt)),
            **({"attr_pos": torch.from_numpy(cat(attr_pos)),
                "attr_tgt": torch.from_numpy(np.concatenate(attr_tgt) if attr_tgt else np.zeros((0, len(FEWSHOT_ATTRS)), np.float32))}
               if self.attrs is not None and task == "fewshot" else {}),
            **({"reg_w": torch.from_numpy(np.concatenate(reg_w))} if weigh_first else {}),
        }

    def consistent_attrs(self, ids, im):
        """FEWSHOT_ATTR_LOSS's targets: the label positions (after ≥ 2 images) where the labels shown
        so far rule out some attribute, and there a distribution over the attributes still
        consistent with them (same value ⇔ same label)."""
        ends = np.nonzero(ids == self.img_end)[0]
        ends = ends[ends + 1 < len(ids)]
        labels, vals = ids[ends + 1], self.attrs[im[: len(ends)]]
        pos, tgt = [], []
        for j in range(1, len(ends)):
            same_label = labels[: j + 1, None] == labels[None, : j + 1]
            same_val = vals[: j + 1, None, :] == vals[None, : j + 1, :]
            ok = (same_val == same_label[:, :, None]).all((0, 1)) & (vals[: j + 1] >= 0).all(0)
            if 0 < ok.sum() < len(FEWSHOT_ATTRS):
                pos.append(ends[j] + 1); tgt.append(ok / ok.sum())
        return np.asarray(pos, dtype=np.int64), np.asarray(tgt, dtype=np.float32).reshape(-1, len(FEWSHOT_ATTRS))

    def repeat_query(self, ids, im, sp):
        """The episode with its query image replaced by demonstration j's image and label."""
        ends = np.nonzero(ids == self.img_end)[0]
        j = int(self.rng.integers(len(im) - 1))
        q = int(ends[-1]) + 1                       # the query's label position
        ids = ids.copy(); ids[q] = ids[ends[j] + 1]
        im = im.copy(); im[-1] = im[j]
        sp = [s for s in sp if s[0] != q] + [[q, min(q + 2, len(ids))]]
        return ids, im, sp

    def sample(self, task: str, batch: int, holdout: bool = False):
        if task == "fewshot" and self.attr_p is not None and not holdout:
            counts = self.rng.multinomial(batch, self.attr_p)
            rows = np.concatenate([r[self.rng.integers(0, len(r), c)] for r, c in zip(self.attr_rows, counts)])
            return self.build(task, rows[self.rng.permutation(batch)])
        if task in self.bins and not holdout:
            bins, p = self.bins[task]
            rows = bins[int(self.rng.choice(len(bins), p=p))]
            return self.build(task, rows[self.rng.integers(0, len(rows), batch)])
        n = self.data[task].n
        lo, hi = (n - HOLDOUT, n) if holdout else (0, n - HOLDOUT)
        return self.build(task, self.rng.integers(lo, hi, batch), augment=not holdout)


class RecallEpisodes:
    """Text-only associative recall in the few-shot layout: `<s> k1 v1 . k2 v2 . … kq` → `vq`, keys
    drawn from the world's ordinary words (2–4 distinct per episode, repeated), values from the
    few-shot labels (a fresh binding per episode). Loss only on values whose key came before, as in
    few-shot episodes. A 2-layer LM forms the induction circuit (copy the previous token into the
    label; match the query against it) on these in a few hundred steps; few-shot episodes then only
    have to map each image's `[/IMG]` into that circuit's key space. Token ids come from the data:
    values are the labels that follow `[/IMG]` in few-shot episodes, the separator what follows them."""

    def __init__(self, split: Split, fewshot: TaskData, rng: np.random.Generator, dim: int):
        sp = split.special
        self.bos, self.pad, self.dim, self.rng = sp["<s>"], sp["[PAD]"], dim, rng
        labels, seps = set(), set()
        for ids in fewshot.ids[:5000]:
            ends = np.nonzero(ids == sp["[/IMG]"])[0]
            ends = ends[ends + 2 < len(ids)]
            labels.update(ids[ends + 1].tolist()); seps.update(ids[ends + 2].tolist())
        assert len(seps) == 1, f"few-shot labels are followed by {len(seps)} different tokens"
        self.sep = seps.pop()
        self.values = np.array(sorted(labels))
        taken = set(sp.values()) | labels | {self.sep}
        self.keys = np.array([t for t in range(split.meta["vocab_size"]) if t not in taken])

    def sample(self, batch: int):
        rows = []
        for _ in range(batch):
            m = int(self.rng.integers(2, 5))
            keys = self.rng.choice(self.keys, m, replace=False)
            vals = self.rng.choice(self.values, m, replace=False)
            order = self.rng.integers(0, m, int(self.rng.integers(m, 2 * m + 2)))
            ids, ce = [self.bos], []
            seen = set()
            for j in order:
                ids.append(int(keys[j]))
                if j in seen:
                    ce.append(len(ids))
                ids += [int(vals[j]), self.sep]
                seen.add(j)
            rows.append((ids, ce))
        t = max(len(r[0]) for r in rows)
        input_ids = np.full((batch, t), self.pad, dtype=np.int64)
        mask = np.zeros((batch, t), dtype=np.int64)
        ce_pos, ce_tgt = [], []
        for r, (ids, ce) in enumerate(rows):
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
            ce_pos += [r * t + c - 1 for c in ce]; ce_tgt += [ids[c] for c in ce]
        none = torch.zeros(0, dtype=torch.int64)
        return {
            "input_ids": torch.from_numpy(input_ids), "mask": torch.from_numpy(mask),
            "slot_pos": none, "slot_vec": torch.zeros(0, self.dim), "gen_slot": torch.zeros(0, dtype=torch.bool),
            "end_pos": none, "reg_pos": none, "reg_vec": torch.zeros(0, self.dim),
            "ce_pos": torch.tensor(ce_pos, dtype=torch.int64), "ce_tgt": torch.tensor(ce_tgt, dtype=torch.int64),
        }


def run(model: CausalLM, b, vec, tap: int = -1):
    """Logits and regressions of a batch whose visual slots hold `vec` (teacher forcing); with
    `tap` ≥ 0, also the residual stream after that layer."""
    ids, mask = b["input_ids"], b["mask"]
    x = model.embed(ids)
    bsz, t, h = x.shape
    flat = x.reshape(-1, h).clone()
    flat[b["slot_pos"]] = model.project_up(vec).to(flat.dtype)    # (bf16 under autocast)
    if model.summary is not None and len(vec):
        # The summary of each image's inputs (for generated ones, what was fed back), at its [/IMG].
        summ = model.summary(vec.reshape(len(b["end_pos"]), -1, vec.shape[-1]))
        ok = b["end_pos"] >= 0
        flat[b["end_pos"][ok]] = flat[b["end_pos"][ok]] + summ[ok].to(flat.dtype)
    x = flat.reshape(bsz, t, h)
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    out = model(x, mask, pos, model.empty_past(bsz), pack=PACK, tap=tap)
    # fp32 out of an autocast forward too: the losses are taken in fp32.
    return (out[0].float(), out[1].float()) if tap < 0 else (out[0].float(), out[1].float(), out[3].float())


def forward(model: CausalLM, b, augment: bool = True, attr_head=None):
    """The batch's losses and logits. `attr_head` (training, FEWSHOT_ATTR_LOSS > 0): the auxiliary
    head on few-shot batches' label positions."""
    vec = b["slot_vec"]
    if augment and GEN_INPUT_NOISE > 0:
        vec = vec + torch.randn_like(vec) * GEN_INPUT_NOISE * b["gen_slot"][:, None].float()
    if augment and SELF_INPUT_SHARE > 0 and len(b["reg_pos"]):
        # One-step scheduled sampling: generated slots in order are exactly reg_pos + 1 (Batcher.build).
        with torch.no_grad():
            _, vis = run(model, b, vec)
        own = vis.reshape(-1, vis.shape[-1])[b["reg_pos"]]
        pick = torch.rand(len(own), device=own.device) < SELF_INPUT_SHARE
        gen_idx = torch.nonzero(b["gen_slot"]).squeeze(1)
        vec = vec.clone()
        vec[gen_idx[pick]] = own[pick]
    aux = attr_head is not None and len(b.get("attr_pos", ())) > 0
    if aux:
        logits, vis, hid = run(model, b, vec, tap=FEWSHOT_ATTR_TAP % model.cfg.layers)
    else:
        logits, vis = run(model, b, vec)
    out = {}
    if aux:
        lp = F.log_softmax(attr_head(hid.reshape(-1, hid.shape[-1])[b["attr_pos"]]).float(), dim=-1)
        out["attr"] = FEWSHOT_ATTR_LOSS * -(b["attr_tgt"] * lp).sum(-1).mean()
    if len(b["ce_pos"]):
        out["ce"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[b["ce_pos"]], b["ce_tgt"])
    if len(b["reg_pos"]):
        if "reg_w" in b:
            per_slot = (vis.reshape(-1, vis.shape[-1])[b["reg_pos"]] - b["reg_vec"]).pow(2).mean(-1)
            out["reg"] = (per_slot * b["reg_w"]).sum() / b["reg_w"].sum()
        else:
            out["reg"] = F.mse_loss(vis.reshape(-1, vis.shape[-1])[b["reg_pos"]], b["reg_vec"])
    return out, logits


def prefill(model: CausalLM, seqs):
    """Left-pads embedded sequences ([T_i, H] each) and runs them: logits and regression of the
    last position, the KV cache and the attention mask."""
    b, t = len(seqs), max(len(s) for s in seqs)
    dev = model.lm_head.weight.device
    x = torch.zeros(b, t, model.cfg.hidden, device=dev)
    mask = torch.zeros(b, t, dtype=torch.long, device=dev)
    for r, s in enumerate(seqs):
        x[r, t - len(s):] = s
        mask[r, t - len(s):] = 1
    logits, vis, past = model(x, mask, (mask.cumsum(1) - 1).clamp_min(0), model.empty_past(b))
    return logits[:, -1], vis[:, -1], past, mask


def extend(model: CausalLM, x, past, mask):
    """One more input embedding per row (x [B, H]) after prefill's cache: the same four results."""
    mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=torch.long, device=mask.device)], 1)
    logits, vis, past = model(x[:, None], mask, mask.sum(1, keepdim=True) - 1, past)
    return logits[:, -1], vis[:, -1], past, mask


@torch.no_grad()
def free_run(model: CausalLM, prefixes, frames: int, n_tok: int, img: int, img_end: int):
    """Regresses `frames` frames after each prefix (input embeddings [T_i, H], ending with `[IMG]`)
    as inference does: each slot reads back project_up of the previous regression, each frame
    closes with `[/IMG]` (plus the image summary) and the next opens with `[IMG]`. → [B, F, N, D]."""
    _, vis, past, mask = prefill(model, prefixes)
    b, dev = len(prefixes), vis.device
    out = torch.zeros(b, frames, n_tok, vis.shape[-1], device=dev)
    for f in range(frames):
        for j in range(n_tok):
            out[:, f, j] = vis
            _, vis, past, mask = extend(model, model.project_up(vis), past, mask)
        if f + 1 < frames:
            end = model.embed(torch.full((b,), img_end, device=dev))
            _, _, past, mask = extend(model, end + model.summary(out[:, f]) if model.summary is not None else end, past, mask)
            _, vis, past, mask = extend(model, model.embed(torch.full((b,), img, device=dev)), past, mask)
    return out


def with_rollouts(model: CausalLM, b, batcher: "Batcher"):
    """The batch with the first k frames of ROLLOUT_SHARE of its videos replaced by free_run's
    frames (k per video, uniform in 1 … frames-1; ROLLOUT_CUT "token" or "first": k tokens); those
    slots become context: no regression loss, no input noise."""
    n_tok, bsz, t = batcher.n_tok, *b["input_ids"].shape
    gen_idx = torch.nonzero(b["gen_slot"]).squeeze(1)
    row = b["slot_pos"][gen_idx] // t
    counts = torch.bincount(row, minlength=bsz)
    rank = torch.arange(len(row), device=row.device) - (torch.cumsum(counts, 0) - counts)[row]
    frame = rank // n_tok
    frames = int(counts.max()) // n_tok
    k = torch.zeros(bsz, dtype=torch.long, device=row.device)
    chosen = np.nonzero(batcher.rng.random(bsz) < ROLLOUT_SHARE)[0]
    if frames < 2 or len(chosen) == 0:
        return b
    # k: how many generated slots of each chosen row are the LM's own.
    lo, hi = {"frame": (1, frames), "token": (1, frames * n_tok), "first": (1, n_tok)}[ROLLOUT_CUT]
    cut = batcher.rng.integers(lo, hi, len(chosen))
    k[chosen] = torch.from_numpy(cut * n_tok if ROLLOUT_CUT == "frame" else cut).to(k.device)
    first = b["slot_pos"][gen_idx][rank == 0] - row[rank == 0] * t      # each row's first generated slot
    prefixes = [model.embed(b["input_ids"][r, : first[r]]) for r in chosen.tolist()]
    own = free_run(model, prefixes, -(-int(k.max()) // n_tok), n_tok, batcher.img, batcher.img_end)
    where = torch.full((bsz,), -1, dtype=torch.long, device=k.device)
    where[torch.from_numpy(chosen).to(k.device)] = torch.arange(len(chosen), device=k.device)
    ctx = rank < k[row]
    b = dict(b)
    b["slot_vec"] = b["slot_vec"].clone()
    b["slot_vec"][gen_idx[ctx]] = own[where[row[ctx]], frame[ctx], rank[ctx] % n_tok]
    b["gen_slot"] = b["gen_slot"].clone()
    b["gen_slot"][gen_idx[ctx]] = False
    b["reg_pos"], b["reg_vec"] = b["reg_pos"][~ctx], b["reg_vec"][~ctx]
    if "reg_w" in b:
        b["reg_w"] = b["reg_w"][~ctx]
    return b


@torch.no_grad()
def probe_fewshot(model, batcher: Batcher, shots_rows: dict, to=lambda b: b, tally: dict | None = None):
    """Teacher-forced accuracy of the query label's first token on held-out episodes, per shot count
    (`to` moves the batch to the model's device), and for 2 and 4 shots also per labelled attribute
    (`4shot_color` …) where the split names it: runs have lost 4-shot on one attribute each.
    `tally`, when given, receives each attribute's (hits, episodes) over its 2- and 4-shot rows."""
    model.eval()
    res = {}
    d = batcher.data["fewshot"]
    for k, rows in shots_rows.items():
        if not rows:
            continue
        b = to(batcher.build("fewshot", rows, augment=False))
        _, logits = forward(model, b, augment=False)
        hit = [int(logits[r, d.prompt[i] - 1].argmax()) == int(d.ids[i][d.prompt[i]]) for r, i in enumerate(rows)]
        res[f"{k}shot"] = sum(hit) / len(rows)
        if k < 2:
            continue
        for a in FEWSHOT_ATTRS:
            mine = [h for h, i in zip(hit, rows) if d.attr[i] == a]
            if mine:
                res[f"{k}shot_{a}"] = sum(mine) / len(mine)
                if tally is not None:
                    h, n = tally.get(a, (0, 0))
                    tally[a] = (h + sum(mine), n + len(mine))
    model.train()
    return res


def attr_errors(tally: dict, previous: np.ndarray | None) -> np.ndarray:
    """Each attribute's error over its held-out 2- and 4-shot episodes in probe_fewshot's tally,
    averaged with the previous probes' (FEWSHOT_ATTR_ADAPT_DECAY; `previous` None: this probe's alone)."""
    err = np.array([1.0 - tally[a][0] / tally[a][1] if tally.get(a, (0, 0))[1] else 0.0 for a in FEWSHOT_ATTRS])
    return err if previous is None else FEWSHOT_ATTR_ADAPT_DECAY * previous + (1 - FEWSHOT_ATTR_ADAPT_DECAY) * err


def attr_shares(err: np.ndarray) -> np.ndarray:
    """FEWSHOT_ATTR_ADAPT's draw shares from the attributes' errors (attr_errors), mixed with the
    uniform share (uniform where nothing was missed)."""
    uniform = np.full(len(FEWSHOT_ATTRS), 1.0 / len(FEWSHOT_ATTRS))
    if err.sum() <= 0:
        return uniform
    return (1 - FEWSHOT_ATTR_ADAPT) * uniform + FEWSHOT_ATTR_ADAPT * err / err.sum()


@torch.no_grad()
def probe_recall(model, recall: RecallEpisodes, to=lambda b: b) -> float:
    """Accuracy of the recalled values on 256 fresh text-only episodes (`to` moves the batch to the
    model's device)."""
    model.eval()
    b = to(recall.sample(256))
    _, logits = forward(model, b, augment=False)
    model.train()
    return float((logits.reshape(-1, logits.shape[-1])[b["ce_pos"]].argmax(-1) == b["ce_tgt"]).float().mean())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_lm(data_dir: str, steps: int, batch: int, seed: int, lr: float = 1e-3, device: str = "cpu", procs: int = 1) -> None:
    """`steps` mixture steps, after RECALL_STEPS of recall (one cosine schedule over both), then
    TAIL_STEPS at the schedule's final learning rate. `device` other than cpu is for recipe research
    (research/lm_sweep.py); the package's LM trains on the CPU.

    `procs` > 1: data parallel. That many processes (forked, so constants set in this module carry
    over; one core each) draw the same task each step and batch/procs examples of it each, from
    their own random streams; their gradients are averaged (gloo all-reduce) before clipping and
    the optimiser step, which every process then takes alike, so the weights stay identical. The
    batch and its caps are the whole step's, as with one process; the losses logged are process 0's
    share. Process 0 logs, probes, checkpoints (with every process's random streams) and saves."""
    if procs <= 1:
        _train_lm(0, 1, data_dir, steps, batch, seed, lr, device)
        return
    assert batch % procs == 0 and all(c % procs == 0 for c in BATCH_CAP.values()), \
        f"batch {batch} and BATCH_CAP {BATCH_CAP} must divide among {procs} processes"
    import torch.multiprocessing as mp
    mp.start_processes(_lm_process, args=(procs, free_port(), data_dir, steps, batch, seed, lr, device),
                       nprocs=procs, start_method="fork")


def join_group(rank: int, procs: int, port: int) -> None:
    """This process into the gloo group of `procs` on 127.0.0.1:`port`."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=procs)


def _lm_process(rank: int, procs: int, port: int, *args) -> None:
    join_group(rank, procs, port)
    try:
        _train_lm(rank, procs, *args)
    finally:
        dist.destroy_process_group()


def average_grads(params, procs: int) -> None:
    """Every process's gradients → their mean, in one all-reduce. A parameter no process's batch
    reached keeps no gradient (AdamW then skips it, as with one process)."""
    had = torch.tensor([float(p.grad is not None) for p in params])
    flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params] + [had])
    dist.all_reduce(flat)
    off = 0
    for p, h in zip(params, flat[-len(params):].tolist()):
        n = p.numel()
        p.grad = flat[off: off + n].view_as(p) / procs if h > 0 else None
        off += n


def _train_lm(rank: int, procs: int, data_dir: str, steps: int, batch: int, seed: int, lr: float, device: str) -> None:
    steps += RECALL_STEPS
    schedule, steps = steps, steps + TAIL_STEPS
    assert SNAPSHOT_AVERAGE == 0 or (SNAPSHOT_EVERY > 0 and steps % SNAPSHOT_EVERY == 0 and
                                     steps - (SNAPSHOT_AVERAGE - 1) * SNAPSHOT_EVERY >= max(SNAPSHOT_FROM, SNAPSHOT_EVERY)), \
        f"SNAPSHOT_AVERAGE {SNAPSHOT_AVERAGE}: the last snapshots of {steps} steps every {SNAPSHOT_EVERY} from {SNAPSHOT_FROM}"
    lead = rank == 0
    log = Log("lm") if lead else (lambda *a, **k: None)
    # Process r's own streams (r = 0 draws exactly as a single process does); the weights start
    # alike everywhere, and the tasks come from one stream every process draws alike.
    own = seed + 1000 * rank
    seed_all(seed)
    split = Split(data_dir)
    embeds = np.load(f"{data_dir}/embeds.npy", mmap_mode="r")
    embeds = np.ascontiguousarray(embeds)  # ~410 MB: random access in RAM
    batcher = Batcher(split, embeds, list(MIXTURE), own)
    task_rng = batcher.rng if procs == 1 else np.random.default_rng([seed, 17])
    cfg = LMConfig(vocab=split.meta["vocab_size"], dim=embeds.shape[2], image_summary=IMAGE_SUMMARY, layers=LAYERS)
    model = CausalLM(cfg).to(device)
    to = lambda b: {k: v.to(device) for k, v in b.items()}  # noqa: E731
    # FEWSHOT_ATTR_LOSS's head: trained with the LM, not part of it (not exported).
    attr_head = torch.nn.Linear(cfg.hidden, len(FEWSHOT_ATTRS)).to(device) if FEWSHOT_ATTR_LOSS > 0 else None
    if rank > 0:
        seed_all(own)
    params = list(model.parameters()) + (list(attr_head.parameters()) if attr_head is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    recall = RecallEpisodes(split, batcher.data["fewshot"], np.random.default_rng(own + 1), embeds.shape[2])
    gens = (batcher.rng, recall.rng) if procs == 1 else (batcher.rng, recall.rng, task_rng)
    # Data parallel: process 0's checkpoint every DP_CHECKPOINT_EVERY steps (all processes at the same
    # step), holding the others' random streams too.
    ck = Checkpoint("lm", gens=gens, every_s=120.0 if procs == 1 else float("inf"))
    if lead:
        state = ck.load()
    else:
        state = torch.load(ck.file, map_location="cpu") if os.path.exists(ck.file) else None
    start, elapsed = 0, 0.0
    attr_err = None  # FEWSHOT_ATTR_ADAPT's averaged errors (process 0's)
    if state:
        assert state.get("procs", 1) == procs, f"{ck.file} was written by {state.get('procs', 1)} processes, not {procs}: " \
            "resume with the same count, or delete it to start over"
        if not lead:
            ck.restore_rng(state["ranks"][rank - 1])
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        if attr_head is not None:
            attr_head.load_state_dict(state["attr_head"])
        start, elapsed = state["step"], state["elapsed"]
        if state.get("attr_p") is not None:
            batcher.attr_p = np.asarray(state["attr_p"])
        if state.get("attr_err") is not None:
            attr_err = np.asarray(state["attr_err"])
        log(f"resumed at step {start}")
    if procs > 1:
        log(f"data parallel: {procs} processes, {batch // procs} of each batch's {batch} examples each")
    log(f"lm {sum(p.numel() for p in model.parameters())} params; tasks " +
        ", ".join(f"{t}={d.n}" for t, d in batcher.data.items()))
    # Held-out episodes grouped by shot count (the number of images before the query minus one).
    fd = batcher.data["fewshot"]
    shots_rows = {k: [] for k in (1, 2, 4)}
    for i in range(fd.n - HOLDOUT, fd.n):
        k = len(fd.images[i]) - 1
        if k in shots_rows and len(shots_rows[k]) < 300:
            shots_rows[k].append(i)
    mixture = dict(MIXTURE, recall=RECALL_SHARE) if RECALL_SHARE > 0 else MIXTURE
    tasks = list(mixture)
    assert ROLLOUT_CUT in ("frame", "token", "first"), f"ROLLOUT_CUT is frame, token or first, not {ROLLOUT_CUT!r}"
    assert set(TAIL_MIXTURE) <= set(tasks), f"TAIL_MIXTURE names unknown tasks: {sorted(set(TAIL_MIXTURE) - set(tasks))}"
    normed = lambda m: np.array([m[t] for t in tasks]) / sum(m[t] for t in tasks)  # noqa: E731
    main_weights, tail_weights = normed(mixture), normed(dict(mixture, **TAIL_MIXTURE))
    floor_lr = cosine_lr(schedule, schedule, lr, 300)

    def lr_at(step: int) -> float:
        if step < schedule or TAIL_LR <= 0:
            return cosine_lr(step, schedule, lr, 300)
        return cosine_lr(step - schedule, TAIL_STEPS, TAIL_LR, 100, floor=floor_lr / TAIL_LR)

    precision = autocast(device)
    log(f"precision: {'bf16 autocast' if autocast_on(device) else 'fp32'} (AUTOCAST={AUTOCAST})")
    t0 = time.time() - elapsed
    run = {t: [] for t in tasks + ["recall", "attr"]}
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if step < RECALL_STEPS:
            task = "recall"
        else:
            task = tasks[int(task_rng.choice(len(tasks), p=main_weights if step < schedule else tail_weights))]
        n = (batch if task == "recall" else min(batch, BATCH_CAP.get(task, batch))) // procs
        b = to(recall.sample(n) if task == "recall" else batcher.sample(task, n))
        with precision:
            if task == "video" and ROLLOUT_SHARE > 0 and step >= ROLLOUT_FROM:
                b = with_rollouts(model, b, batcher)
            out, _ = forward(model, b, attr_head=attr_head)
        task_loss = out.get("ce", 0.0) + out.get("reg", 0.0)
        loss = task_loss + out.get("attr", 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if procs > 1:
            average_grads(params, procs)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run[task].append(float(task_loss))
        if "attr" in out:
            run["attr"].append(float(out["attr"]))
        last = step == steps - 1
        dp_save = procs > 1 and (last or (step + 1) % DP_CHECKPOINT_EVERY == 0)
        if dp_save:
            ranks = [None] * procs
            weights = float(sum(p.detach().double().sum() for p in params))
            dist.all_gather_object(ranks, (ck.rng_state(), weights))
            assert len({w for _, w in ranks}) == 1, f"the processes' weights differ at step {step + 1}: {[w for _, w in ranks]}"
            ranks = [r for r, _ in ranks]
        probe, tally = None, {}
        if lead and (step % 1000 == 0 or last):
            probe = dict(probe_fewshot(model, batcher, shots_rows, to, tally), recall=probe_recall(model, recall, to))
        if FEWSHOT_ATTR_ADAPT > 0 and step % 1000 == 0 and step >= FEWSHOT_ATTR_ADAPT_FROM:
            # Process 0's probe sets every process's shares (the draws stay each process's own).
            if lead:
                attr_err = attr_errors(tally, attr_err)
            shares = torch.tensor(attr_shares(attr_err) if lead else np.zeros(len(FEWSHOT_ATTRS)), dtype=torch.float64)
            if procs > 1:
                dist.broadcast(shares, 0)
            batcher.attr_p = shares.numpy()
        if not lead:
            continue
        if step % 250 == 0 or last:
            means = {t: float(np.mean(v[-50:])) for t, v in run.items() if v}
            log(f"step {step}", steps_per_s=(step - start + 1) / max(1e-6, time.time() - t0 - elapsed), **means)
        if probe is not None:
            log(f"probe step {step}", **probe,
                **({f"share_{a}": float(p) for a, p in zip(FEWSHOT_ATTRS, batcher.attr_p)} if batcher.attr_p is not None else {}),
                **({f"err_{a}": float(e) for a, e in zip(FEWSHOT_ATTRS, attr_err)} if attr_err is not None else {}))
        if SNAPSHOT_EVERY > 0 and step + 1 >= SNAPSHOT_FROM and (step + 1) % SNAPSHOT_EVERY == 0:
            save_lm(model, cfg, time.time() - t0, path("snapshots", f"lm-{step + 1}.pt"))
        if procs == 1 or dp_save:
            ck.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                     "elapsed": time.time() - t0, "config": cfg.__dict__,
                     **({"attr_head": attr_head.state_dict()} if attr_head is not None else {}),
                     **({"attr_p": batcher.attr_p.tolist()} if batcher.attr_p is not None else {}),
                     **({"attr_err": attr_err.tolist()} if attr_err is not None else {}),
                     **({"procs": procs, "ranks": ranks[1:]} if dp_save else {})}, force=last or dp_save)
    if lead:
        if SNAPSHOT_AVERAGE > 0:
            files = [path("snapshots", f"lm-{steps - j * SNAPSHOT_EVERY}.pt") for j in reversed(range(SNAPSHOT_AVERAGE))]
            save_state(mean_state(files), path("lm.pt"))
            log(f"saved the mean of {', '.join(os.path.basename(f) for f in files)}")
        else:
            save_lm(model, cfg, time.time() - t0, path("lm.pt"))
            log("saved")


def save_lm(model: CausalLM, cfg: LMConfig, train_s: float, file: str) -> None:
    """The LM's weights as export.py and evaluate.py read them."""
    save_state({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "config": cfg.__dict__, "train_s": train_s}, file)


def save_state(state: dict, file: str) -> None:
    """Written whole, then renamed."""
    torch.save(state, file + ".tmp")
    os.replace(file + ".tmp", file)


def mean_state(files: list) -> dict:
    """The lm.pt-format mean of LM snapshots' weights (SNAPSHOT_AVERAGE, research/snapshots.py)."""
    states = [torch.load(f, map_location="cpu") for f in files]
    configs = {str(s["config"]) for s in states}
    if len(configs) != 1:
        raise SystemExit(f"snapshots of different LM configs: {sorted(configs)}")
    model = {}
    for k, v in states[0]["model"].items():
        if v.is_floating_point():
            model[k] = torch.stack([s["model"][k] for s in states]).mean(0)
        elif any(not torch.equal(v, s["model"][k]) for s in states):
            raise SystemExit(f"non-float tensor {k} differs between snapshots")
        else:
            model[k] = v
    return {"model": model, "config": states[0]["config"], "train_s": max(s["train_s"] for s in states),
            "averaged": [os.path.basename(f) for f in files]}
