"""Runs the trained PyTorch emu2-tiny on an evaluation split written by the world
(`npm run world -- dataset --split eval`) and writes outputs.jsonl / outputs.u8 for the scorer
(`npm run world -- score`). Text: greedy decoding with the KV cache. Images: regression of the
visual tokens with the KV cache (Emu2 §2.3), then the chosen decoder.

  /usr/bin/python3 models/training/evaluate.py --eval DIR --out DIR [--decoder diffusion|direct]
      [--guidance G] [--steps N] [--tasks caption,vqa,...] [--e2e FILE]
"""
import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emu_tiny  # noqa: E402,F401  (first: picks OpenBLAS's kernels before numpy loads it)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emu_tiny.data import Split, clip_normalise, to_unit  # noqa: E402
from emu_tiny.decoder import ddim_sample  # noqa: E402
from emu_tiny.export import load_trained  # noqa: E402
from emu_tiny.lm import extend, free_run, prefill  # noqa: E402
from emu_tiny.modules import DirectDecoder, VaeDecoder  # noqa: E402

TEXT_TASKS = ("caption", "vqa", "fewshot")
IMAGE_TASKS = ("t2i", "subject", "grounded", "video")


class Runner:
    def __init__(self, nets, split: Split):
        self.nets, self.lm = nets, nets.lm
        sp = split.special
        self.sp = sp
        self.n_tok = split.tokens_per_image
        with torch.no_grad():
            self.embeds = torch.cat([nets.encoder(clip_normalise(to_unit(split.images[i:i + 256])))
                                     for i in range(0, len(split.images), 256)])

    def embed_prompt(self, ids, images):
        """Token embeddings with image slots spliced (project_up of the encoder's tokens)."""
        ids_t = torch.tensor(ids, dtype=torch.long)
        x = self.lm.embed(ids_t)
        slot = (ids_t == self.sp["<image>"]) | (ids_t == self.sp["[gIMG]"])
        if slot.any():
            per_image = self.embeds[torch.tensor(images, dtype=torch.long)]
            vis = per_image.reshape(-1, self.embeds.shape[-1])
            x[slot] = self.lm.project_up(vis[: int(slot.sum())])
            if self.lm.summary is not None:
                # Each image's summary at its closing [/IMG] (the slot after its last token).
                last = torch.nonzero(slot)[:, 0][self.n_tok - 1:: self.n_tok]
                summ = self.lm.summary(per_image)
                for k, p in enumerate(last.tolist()):
                    if p + 1 < len(ids) and ids[p + 1] == self.sp["[/IMG]"]:
                        x[p + 1] = x[p + 1] + summ[k]
        return x

    @torch.no_grad()
    def greedy(self, seqs, max_new=40):
        logits, _, past, mask = prefill(self.lm, seqs)
        stop = {self.sp["</s>"], self.sp["[IMG]"]}
        out = [[] for _ in seqs]
        done = [False] * len(seqs)
        for _ in range(max_new):
            nxt = logits.argmax(-1)
            for r, tok in enumerate(nxt.tolist()):
                if not done[r]:
                    out[r].append(tok)
                    done[r] = tok in stop
            if all(done):
                break
            logits, _, past, mask = extend(self.lm, self.lm.embed(nxt), past, mask)
        return out

    @torch.no_grad()
    def regress(self, seqs, frames=1):
        """Appends [IMG] and regresses tokens_per_image embeddings per frame as the runtime does
        (lm.free_run). Returns [B, frames, N, D]."""
        img = self.lm.embed(torch.tensor([self.sp["[IMG]"]]))
        return free_run(self.lm, [torch.cat([s, img]) for s in seqs], frames, self.n_tok, self.sp["[IMG]"], self.sp["[/IMG]"])


def to_u8(img):
    """[B,3,H,W] in [-1,1] → uint8 HWC, as Emu2's (x/2+0.5).clamp(0,1)·255 rounded."""
    return ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--decoder", default="diffusion", choices=["diffusion", "direct"])
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default=",".join(TEXT_TASKS + IMAGE_TASKS))
    ap.add_argument("--limit", type=int, default=0, help="examples per task file (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--e2e", default=None, help="also write end-to-end parity cases to this torch file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    split = Split(a.eval)
    # --e2e's parity cases run both decoders: both must be trained.
    nets = load_trained(require_direct=a.decoder == "direct" or bool(a.e2e), require_unet=a.decoder == "diffusion" or bool(a.e2e))
    run = Runner(nets, split)
    vae = VaeDecoder(nets.ae).eval()
    direct = DirectDecoder(nets.direct_head, nets.ae).eval()
    uncond = run.regress([run.embed_prompt([split.special["<s>"]], [])])[0, 0]
    gen = torch.Generator().manual_seed(a.seed)
    lat_shape = (nets.unet.cfg.latent_channels, nets.ae.cfg.latent_size, nets.ae.cfg.latent_size)

    def decode(tokens):
        """tokens [B,N,D] → uint8 images."""
        with torch.no_grad():
            if a.decoder == "direct":
                return to_u8(direct(tokens))
            noise = torch.randn((tokens.shape[0],) + lat_shape, generator=gen)
            return to_u8(ddim_sample(nets.unet, vae, tokens, uncond.expand_as(tokens), a.steps, a.guidance, noise))

    outputs = open(os.path.join(a.out, "outputs.jsonl"), "w")
    images = open(os.path.join(a.out, "outputs.u8"), "wb")
    n_images = 0
    t_all = time.time()
    for task in a.tasks.split(","):
        all_rows = split.examples(task)
        lines = list(range(len(all_rows)))
        if a.limit:
            # Few-shot files hold one block per shot count; take the first `limit` of each block.
            blocks = 4 if task == "fewshot" else 1
            per = len(all_rows) // blocks
            lines = [k * per + i for k in range(blocks) for i in range(min(a.limit, per))]
        rows = [(i, all_rows[i]) for i in lines]
        if os.path.abspath(a.out) != os.path.abspath(a.eval):
            shutil.copyfile(os.path.join(a.eval, f"{task}.jsonl"), os.path.join(a.out, f"{task}.jsonl"))
        t0 = time.time()
        for s in range(0, len(rows), 64):
            chunk = rows[s:s + 64]
            seqs = [run.embed_prompt(r["ids"][: r["prompt"]], [im for im, g in zip(r["images"], r["gen"]) if not g]) for _, r in chunk]
            if task in TEXT_TASKS:
                for (line, _), ids in zip(chunk, run.greedy(seqs)):
                    outputs.write(json.dumps({"task": task, "line": line, "ids": ids}) + "\n")
                continue
            frames = 8 if task == "video" else 1
            toks = run.regress(seqs, frames)
            pics = decode(toks.reshape(-1, toks.shape[2], toks.shape[3]))
            images.write(pics.tobytes())
            for r, (line, _) in enumerate(chunk):
                ks = list(range(n_images + r * frames, n_images + (r + 1) * frames))
                outputs.write(json.dumps({"task": task, "line": line, **({"frames": ks} if task == "video" else {"image": ks[0]})}) + "\n")
            n_images += len(pics)
        print(f"{task}: {len(rows)} examples in {time.time() - t0:.1f} s", flush=True)
    outputs.close()
    images.close()
    print(f"done in {time.time() - t_all:.1f} s ({a.decoder}, guidance {a.guidance}, {a.steps} steps)")
    if a.e2e:
        write_e2e(a.e2e, run, split, nets, vae, uncond)


@torch.no_grad()
def write_e2e(file, run, split, nets, vae, uncond):
    """End-to-end parity cases: prompt → greedy ids; prompt → regressed tokens → DDIM image."""
    cases = {}
    r = split.examples("vqa")[0]
    img_idx = [im for im, g in zip(r["images"], r["gen"]) if not g]
    ids = run.greedy([run.embed_prompt(r["ids"][: r["prompt"]], img_idx)], max_new=8)[0]
    cases["e2e_chat_greedy"] = {"graph": "e2e:text", "inputs": {
        "input_ids": torch.tensor(r["ids"][: r["prompt"]]), "image_rgb": torch.from_numpy(np.asarray(split.images[img_idx[0]])).float()},
        "outputs": {"generated_ids": torch.tensor(ids)}}
    # Few-shot (three images: every image's summary lands at its own [/IMG]).
    r = next(x for x in split.examples("fewshot") if len(x["images"]) == 3)
    ids = run.greedy([run.embed_prompt(r["ids"][: r["prompt"]], r["images"])], max_new=2)[0]
    cases["e2e_fewshot_greedy"] = {"graph": "e2e:text", "inputs": {
        "input_ids": torch.tensor(r["ids"][: r["prompt"]]),
        "image_rgb": torch.from_numpy(np.stack([np.asarray(split.images[i]) for i in r["images"]])).float()},
        "outputs": {"generated_ids": torch.tensor(ids)}}
    # Video: three frames regressed, each closed by [/IMG] (with its summary) before the next.
    r = split.examples("video")[0]
    toks = run.regress([run.embed_prompt(r["ids"][: r["prompt"]], [])], frames=3)[0]
    cases["e2e_video"] = {"graph": "e2e:video", "inputs": {"input_ids": torch.tensor(r["ids"][: r["prompt"]])},
                          "outputs": {"regressed": toks}}
    r = split.examples("t2i")[0]
    toks = run.regress([run.embed_prompt(r["ids"][: r["prompt"]], [])])[0, 0]
    g = torch.Generator().manual_seed(11)
    noise = torch.randn((1, nets.unet.cfg.latent_channels, nets.ae.cfg.latent_size, nets.ae.cfg.latent_size), generator=g)
    img = ddim_sample(nets.unet, vae, toks[None], uncond[None], 20, 2.0, noise)
    cases["e2e_t2i"] = {"graph": "e2e:image", "inputs": {
        # The sequence as the engines receive it: the prompt then [IMG] (the regression continues from there).
        "input_ids": torch.tensor(r["ids"][: r["prompt"]] + [split.special["[IMG]"]]), "noise": noise,
        "steps": torch.tensor([20]), "guidance_scale": torch.tensor([2.0])},
        "outputs": {"regressed": toks, "negative": uncond, "image": img}}
    torch.save(cases, file)


if __name__ == "__main__":
    main()
