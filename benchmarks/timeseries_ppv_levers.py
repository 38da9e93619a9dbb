"""Issue 17 levers: a training-free, dataset-independent MiniRocket-style encoder for time series.

    FEWSHOT_AEON_DATA=.venv-aeon/lib/python3.11/site-packages/aeon/datasets/data \
        python benchmarks/timeseries_ppv_levers.py [ACSF1,ArrowHead,...] [VARIANT,VARIANT,...]

Leave one problem out, the episodes of benchmarks/timeseries_fewshot.py (500, seed 0, cosine
prototypes). Every channel (series standardised as a whole and resampled to 128 steps, as
``SequencePreprocess(kind="ts")``; then z-normalised) gives MiniRocket's PPV features: 84
kernels x 13 dilations x 5 bias quantiles, the biases fitted on the OTHER problems' channels.
Variants: the unit PPV vector with the channel's level and scale (weight w) appended, raw or
centred on the other problems' mean, or projected by their PCA (whitened or not); ``raw_w1_absA``
adds each channel's absolute level and scale (raw ``asinh(mean)``, ``log(sd)``, standardised by
their spread over the other problems) at weight A; channels summed into 12 slots as ts-gru does. Results: benchmarks/results/timeseries_ppv_levers.md.
A measurement script, not shipped code.
"""
import os, sys, itertools, time
import numpy as np, torch, torch.nn.functional as F
from fewshot.data.timeseries import load_ucr, AEON_CLASSIFICATION
from fewshot.sequences import standardise_resample
from fewshot.evaluation.kernel import evaluate_embeddings, max_queries
torch.set_num_threads(1)
L = 128
KERNELS = torch.tensor([[2.0 if i in c else -1.0 for i in range(9)] for c in itertools.combinations(range(9), 3)])
DIL = sorted(set(int(2 ** e) for e in np.linspace(0, np.log2((L - 1) / 8), 24)))
Q = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
if os.environ.get("TS_DIL"):  # a smaller feature set, e.g. TS_DIL=1,2,4,8,15 TS_Q=0.1,0.5,0.9
    DIL = [int(d) for d in os.environ["TS_DIL"].split(",")]
if os.environ.get("TS_Q"):
    Q = torch.tensor([float(q) for q in os.environ["TS_Q"].split(",")])

def channels(items):
    """-> z [n_ch, L] per-channel z-normalised, stats [n_ch, 2] (mean, sd relative to whole series), owner [n_ch],
    absolute [n_ch, 2]: the raw channel's asinh(mean) and log(sd), the level and scale standardising drops"""
    zs, st, own, ab = [], [], [], []
    for i, s in enumerate(items):
        raw = torch.from_numpy(np.asarray(s, np.float64)).T  # [C, T]
        ab.append(torch.stack([torch.asinh(raw.mean(1)), torch.log(raw.std(1, unbiased=False) + 1e-6)], 1).float())
        x = torch.from_numpy(standardise_resample(np.asarray(s), L)).T  # [C, L]
        mu, sd = x.mean(1, keepdim=True), x.std(1, unbiased=False, keepdim=True)
        zs.append((x - mu) / sd.clamp_min(1e-6)); st.append(torch.cat([mu, sd], 1)); own += [i] * len(x)
    return torch.cat(zs), torch.cat(st), torch.tensor(own), torch.cat(ab)

def convs(z):
    return [F.conv1d(z[:, None], KERNELS[:, None, :], padding=4 * d, dilation=d) for d in DIL]

def fit_biases(z):
    z = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(0))[:2000]]
    return [torch.quantile(c.transpose(0, 1).reshape(84, -1), Q, dim=1).T for c in convs(z)]

def ppv(z, biases, chunk=512):
    out = []
    for i in range(0, len(z), chunk):
        cs = convs(z[i:i + chunk])
        out.append(torch.cat([(c[..., None] > b[None, :, None, :]).float().mean(2).reshape(len(c), -1) for c, b in zip(cs, biases)], 1))
    return torch.cat(out)

def embed(f, st, own, n, w, slots=12):
    f = F.normalize(f, dim=1)
    e = torch.cat([f, st * w], 1)
    ch = torch.cat([torch.arange((own == i).sum()) for i in range(n)])
    out = torch.zeros(n * slots, e.shape[1]).index_add_(0, own * slots + ch % slots, e)
    return out.reshape(n, -1).numpy()

names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(AEON_CLASSIFICATION)
ONLY = sys.argv[2].split(",") if len(sys.argv) > 2 else None  # variants to run (default all)
sets = {n: load_ucr(n) for n in AEON_CLASSIFICATION}
res = {}
for name in names:
    t0 = time.time()
    zp = torch.cat([channels(s.items)[0] for n, s in sets.items() if n != name])
    abp = torch.cat([channels(s.items)[3] for n, s in sets.items() if n != name])
    ab_mu, ab_sd = abp.mean(0), abp.std(0)  # the absolute stats' spread over the OTHER problems
    biases = fit_biases(zp)
    zpool = zp[torch.randperm(len(zp), generator=torch.Generator().manual_seed(1))[:3000]]
    fp = ppv(zpool, biases); m = fp.mean(0)
    U, S, V = torch.linalg.svd(fp - m, full_matrices=False)
    ds = sets[name]
    z, st, own, ab = channels(ds.items)
    abz = (ab - ab_mu) / ab_sd
    f = ppv(z, biases)
    ways = min(len(ds.classes), 10)
    r = {}
    variants = {"raw_w0": (f, 0.0), "raw_w1": (f, 1.0), "c_w1": (f - m, 1.0), "c_w0.5": (f - m, 0.5),
                "pca256_w1": ((f - m) @ V[:256].T, 1.0), "pca256_w0.5": ((f - m) @ V[:256].T, 0.5),
                "pca128_w0.5": ((f - m) @ V[:128].T, 0.5), "pca256wh_w0.5": ((f - m) @ V[:256].T / S[:256].sqrt(), 0.5)}
    variants.update({f"raw_w1_abs{a}": (f, 1.0, a) for a in (0.25, 0.5, 1.0)})
    if ONLY:
        variants = {k: v for k, v in variants.items() if k in ONLY}
    for k, (ff, w, *a) in variants.items():
        e = embed(ff, torch.cat([st, abz * a[0]], 1) if a else st, own, len(ds), w)
        for shots in (1, 5):
            q = max_queries(ds, ways, shots, 5)
            r[f"{k}-{shots}"] = round(100 * evaluate_embeddings(e.astype(np.float32), ds, ways, shots, q, 500, 0, metric="cosine").accuracy, 1)
    res[name] = r
    print(name, r, round(time.time() - t0, 1), flush=True)

keys = list(next(iter(res.values())))
print({k: round(float(np.mean([res[n][k] for n in res])), 1) for k in keys})
