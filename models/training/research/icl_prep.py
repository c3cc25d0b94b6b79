"""Cuts a training split down to what icl_diagnostic.py needs: the first 80k few-shot episodes, their
images' descriptions and frozen-encoder embeddings (fp16), renumbered. usage: icl_prep.py SPLIT_DIR OUT_DIR"""
import json, gzip, numpy as np, sys
src, dst = sys.argv[1], sys.argv[2]
import os; os.makedirs(dst, exist_ok=True)
rows = []
for i, l in enumerate(open(f"{src}/fewshot.jsonl")):
    rows.append(json.loads(l))
    if len(rows) >= 80000: break
ims = sorted({j for r in rows for j in r["images"]}); remap = {j: k for k, j in enumerate(ims)}
for r in rows: r["images"] = [remap[j] for j in r["images"]]
with gzip.open(f"{dst}/fewshot.jsonl.gz", "wt") as f:
    for r in rows: f.write(json.dumps(r) + "\n")
desc = [json.loads(l) for l in open(f"{src}/images.jsonl")]
with open(f"{dst}/images.jsonl", "w") as f:
    for j in ims: f.write(json.dumps(desc[j]) + "\n")
emb = np.load(f"{src}/embeds.npy", mmap_mode="r")
np.save(f"{dst}/embeds.npy", np.asarray(emb[ims]).astype(np.float16))
json.dump(json.load(open(f"{src}/meta.json")), open(f"{dst}/meta.json", "w"))
print(len(rows), len(ims))
