"""The peer baseline: perceptual hashes (imagehash's pHash and dHash, 64 bits), every pair within a Hamming
threshold joined into groups (the same union FindDuplicates does). All pairs come from one exact range search per
threshold in a faiss binary index; a threshold past ``max_pairs`` pairs is reported as such, not grouped (it
chains nearly everything)."""

from __future__ import annotations

import time

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASHES = {"phash": imagehash.phash, "dhash": imagehash.dhash}
QUERY_CHUNK = 4096


def hash_codes(images: list[Image.Image], kind: str) -> tuple[np.ndarray, float]:
    """uint8 [N, 8] packed 64-bit hashes, and the seconds it took."""
    fn = HASHES[kind]
    t0 = time.perf_counter()
    codes = np.stack([np.packbits(fn(im).hash.flatten()) for im in images])
    return codes, time.perf_counter() - t0


def group_labels(codes: np.ndarray, threshold: int, max_pairs: int) -> tuple[np.ndarray | None, int, float]:
    """(a group label per item, or None past ``max_pairs``; the pairs found; seconds)."""
    import faiss

    t0 = time.perf_counter()
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    rows, cols, n_pairs = [], [], 0
    for start in range(0, len(codes), QUERY_CHUNK):
        lims, _, found = index.range_search(codes[start:start + QUERY_CHUNK], threshold + 1)  # distance < radius
        query = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64)))
        keep = found > query
        n_pairs += int(keep.sum())
        if n_pairs > max_pairs:
            return None, n_pairs, time.perf_counter() - t0
        rows.append(query[keep])
        cols.append(found[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(len(codes), len(codes)))
    _, labels = connected_components(graph, directed=False)
    return labels, n_pairs, time.perf_counter() - t0
