"""Recommendation networks: each maps (users, histories) to scores over the whole catalogue."""

from domains.retail.models.bpr import BPRMF
from domains.retail.models.lightgcn import LightGCN
from domains.retail.models.multvae import MultVAE
from domains.retail.models.neumf import NeuMF
from domains.retail.models.sasrec import SASRec

NETWORKS = {"bpr": BPRMF, "lightgcn": LightGCN, "neumf": NeuMF, "multvae": MultVAE, "sasrec": SASRec}

__all__ = ["BPRMF", "LightGCN", "NeuMF", "MultVAE", "SASRec", "NETWORKS"]
