"""``context.intervention=conta_appearance``: CONTA's adjustment with a dictionary that holds the
context (ours; :mod:`causal_wsss.models.appearance` gives the formula), and its diagnostic
``oracle_conta_appearance``.

Stage ``appearance_dict`` runs round t - 1's trunk (its ``cam_net.pt``; the classifier is not
needed) once over every training image, whole and unflipped, and pools its last features twice:
over the image (the image's query q) and over the cells that round t - 1's pseudo-mask calls
background (the image's context). The context vectors are clustered by k-means (on unit-length
rows, so the clusters follow what the context looks like rather than how bright its features
are) into K prototypes, the clusters' means; P(c_k) is each cluster's share of the images. K is
chosen without ground truth: the K in 2..8 with the largest mean silhouette. Images whose
pseudo-mask has no background cell are left out of the clustering.

``oracle_conta_appearance`` (a diagnostic: it reads the generator's record) takes one entry per
true context type instead (the mean context vector of the images drawn on it, P = its share):
would CONTA's architecture work if its dictionary held the real confounder?

Not implemented: fusing m before the trunk's last block (the issue's option); m enters at the
head only, as CONTA's m does here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_checkpoint
from ..data.synthetic import context_map, load_meta
from ..data.transforms import normalize
from ..errors import ConfigError, DataError
from ..io import atomic_path, write_json
from ..models.appearance import AppearanceAdjustment, AppearanceCamNet
from ..runtime import eval_mode, progress_bar, seed_everything, stage_seed
from ..stages.models import build_cam_model, initial_cam_model
from ..stages.spec import StageSpec
from .bank import read_pseudo_mask
from .base import Intervened, Intervention, InterventionRound

FOLDER = "appearance"
FILES = ("dictionary.npy", "prior.npy", "queries.npy")
K_RANGE = range(2, 9)


@torch.inference_mode()
def pooled_features(net, train_ds, prev_dir: Path, *, device: torch.device,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(queries (N, C), contexts (N, C))``: every training image's trunk features pooled over
    the image and over round t - 1's predicted background (NaN rows where it has none)."""
    queries, contexts = [], []
    with eval_mode(net):
        for i in progress_bar(range(len(train_ds)), desc="appearance", disable=not progress,
                              leave=False):
            image = torch.from_numpy(np.ascontiguousarray(train_ds.load_image(i).transpose(2, 0, 1)))
            features = net.trunk_features(normalize(image[None].to(device))).float()[0]  # (C, h, w)
            mask = read_pseudo_mask(prev_dir, train_ds.names[i], train_ds.num_classes)
            background = F.interpolate(torch.from_numpy(mask == 0)[None, None].float(),
                                       size=features.shape[-2:], mode="nearest-exact")[0, 0] > 0
            queries.append(features.mean(dim=(1, 2)).cpu())
            contexts.append(features[:, background.to(features.device)].mean(dim=1).cpu()
                            if background.any() else torch.full((features.shape[0],), np.nan))
    return torch.stack(queries).numpy(), torch.stack(contexts).numpy()


def cluster_contexts(contexts: np.ndarray, *, seed: int) -> dict:
    """k-means of the context vectors on unit-length rows, K by the largest mean silhouette over
    2..8; returns ``prototypes`` (K, C: the clusters' means of the raw vectors), ``prior`` (K,),
    ``k`` and ``silhouette`` per K."""
    from sklearn.cluster import KMeans  # heavy (about 1 s): imported on use
    from sklearn.metrics import silhouette_score

    x = contexts[~np.isnan(contexts).any(axis=1)]
    if x.shape[0] < 3:
        raise DataError(f"only {x.shape[0]} training images have predicted background in the "
                        "previous round's pseudo-masks; conta_appearance needs at least 3 to "
                        "cluster the context")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    scores, fits = {}, {}
    for k in K_RANGE:
        if k >= x.shape[0]:
            break
        fit = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(unit)
        if len(set(fit.labels_)) < 2:
            continue
        scores[k] = float(silhouette_score(unit, fit.labels_))
        fits[k] = fit.labels_
    if not scores:
        raise DataError("the context vectors of the previous round cannot be clustered (every "
                        "image's background looks the same to the trunk)")
    k = max(scores, key=scores.get)
    labels = fits[k]
    prototypes = np.stack([x[labels == j].mean(axis=0) for j in range(k)])
    prior = np.bincount(labels, minlength=k) / labels.size
    return {"prototypes": prototypes, "prior": prior, "k": k, "silhouette": scores}


def _save(folder: Path, dictionary: np.ndarray, prior: np.ndarray, queries: np.ndarray,
          meta: dict) -> None:
    for name, array in zip(FILES, (dictionary, prior, queries)):
        with atomic_path(folder / name, suffix=".npy") as tmp:
            np.save(tmp, np.asarray(array, dtype=np.float32))
    write_json(folder / "meta.json", meta)


def previous_trunk(cfg, num_fg: int, prev_dir: Path, device: torch.device):
    """Round t - 1's CAM network, weights of ``cam_net.pt`` loaded into a plain network (its
    context columns and modules, if any, are not needed: only the trunk is run)."""
    net = build_cam_model(cfg, num_fg)
    state = load_checkpoint(prev_dir / "cam_net.pt", map_location="cpu")["model"]
    state = {k.removeprefix("cam_net."): v for k, v in state.items()}  # a ContextCamNet's
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    trunk = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if any(not k.startswith("classifier") for k in missing):
        raise DataError(f"{prev_dir / 'cam_net.pt'} does not hold this config's CAM trunk "
                        f"(missing {missing[:3]}); expected round t - 1's network")
    net.load_state_dict({**own, **trunk})
    return net.to(device)


def build_appearance_dict(round_: InterventionRound, *, oracle: bool) -> dict:
    """Stage ``appearance_dict`` (module docstring); writes ``appearance/`` in the round folder."""
    cfg, train_ds = round_.cfg, round_.sets["train"]
    net = previous_trunk(cfg, train_ds.num_classes - 1, round_.prev_dir, round_.device)
    queries, contexts = pooled_features(net, train_ds, round_.prev_dir, device=round_.device,
                                        progress=round_.progress)
    if oracle:
        root = getattr(train_ds, "voc_root", None)
        if root is None or not (Path(root) / "synthetic.json").is_file():
            raise ConfigError("context.intervention=oracle_conta_appearance needs a synthetic "
                              "data set (it reads each image's true context)")
        meta = load_meta(root)
        truth = context_map(meta, train_ds.names)  # (N,): the generator's record
        context_names = list(meta["contexts"])
        keep = ~np.isnan(contexts).any(axis=1)
        types = sorted(set(truth[keep].tolist()))
        dictionary = np.stack([contexts[keep & (truth == t)].mean(axis=0) for t in types])
        prior = np.array([(truth[keep] == t).mean() for t in types])
        meta = {"k": len(types), "source": "generator (oracle): one entry per true context",
                "contexts": [context_names[t] for t in types]}
    else:
        fit = cluster_contexts(contexts, seed=stage_seed(cfg.seed, "appearance"))
        dictionary, prior = fit["prototypes"], fit["prior"]
        meta = {"k": fit["k"], "silhouette": fit["silhouette"],
                "source": "k-means of the previous round's predicted background"}
    meta["images_without_background"] = int(np.isnan(contexts).any(axis=1).sum())
    _save(round_.round_dir / FOLDER, dictionary, prior, queries, meta)
    return {"k": int(meta["k"]), "prior": [float(p) for p in prior],
            "images_without_background": meta["images_without_background"],
            "channels": int(dictionary.shape[1])}


def load_appearance(folder: Path) -> tuple[np.ndarray, ...]:
    """``(dictionary, prior, queries)`` of stage ``appearance_dict``; DataError naming a bad file."""
    out = []
    for name in FILES:
        try:
            out.append(np.load(folder / name, allow_pickle=False))
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{folder / name} is missing or unreadable ({exc}); delete it and "
                            "rerun: its stage is redone") from exc
    return tuple(out)


def _prepare(round_: InterventionRound, *, oracle: bool) -> Intervened:
    cfg, r = round_.cfg, round_.r
    train_ds = round_.sets["train"]
    stage = "oracle_appearance_dict" if oracle else "appearance_dict"
    round_.timed(stage, lambda: build_appearance_dict(round_, oracle=oracle))
    dictionary, prior, queries = load_appearance(round_.round_dir / FOLDER)
    channels = int(dictionary.shape[1])
    cam_net = initial_cam_model(cfg, train_ds.num_classes - 1, with_context=True,
                                context_channels=channels)
    g = torch.Generator().manual_seed(stage_seed(cfg.seed, f"appearance_{r}"))
    with torch.no_grad():  # the context columns start at N(0, 0.01), as the official m_t.py
        cam_net.classifier.context_weight.copy_(
            torch.randn(cam_net.classifier.context_weight.shape, generator=g) * 0.01)
    seed_everything(stage_seed(cfg.seed, f"context_{r}"))
    cam_net.new_modules["context"] = AppearanceAdjustment(dictionary, prior, queries)

    def no_context(items: list[dict]) -> torch.Tensor:  # CAMs and twins: the image's own evidence
        return torch.zeros(len(items), channels, 1, 1)

    return Intervened(model=AppearanceCamNet(cam_net), cam_net=cam_net,
                      context_fn=lambda model: no_context,
                      summary={"appearance_k": int(dictionary.shape[0])})


def prepare(round_: InterventionRound) -> Intervened:
    """Stage ``appearance_dict`` (k-means of the predicted background), then CONTA's head."""
    return _prepare(round_, oracle=False)


def prepare_oracle(round_: InterventionRound) -> Intervened:
    """Stage ``oracle_appearance_dict`` (one entry per true context), then CONTA's head."""
    return _prepare(round_, oracle=True)


_FILES = tuple((f"{FOLDER}/{name}", "npy") for name in FILES) + ((f"{FOLDER}/meta.json", "json"),)

INTERVENTION = Intervention(
    name="conta_appearance",
    description="CONTA's adjustment over appearance prototypes of the predicted background",
    prepare=prepare,
    stages=(StageSpec("appearance_dict", files=_FILES,
                      inputs=((-1, "pseudo"), (-1, "cam_train"))),),
)

ORACLE = Intervention(
    name="oracle_conta_appearance",
    description="diagnostic (reads the generator): one appearance entry per true context",
    prepare=prepare_oracle,
    stages=(StageSpec("oracle_appearance_dict", files=_FILES,
                      inputs=((-1, "pseudo"), (-1, "cam_train"))),),
    oracle=True,
)
