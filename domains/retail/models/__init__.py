"""Recommendation networks: each maps (users, histories) to scores over the whole catalogue."""

from sectorkit.domains.retail.models.bpr import BPRMF
from sectorkit.domains.retail.models.lightgcn import LightGCN
from sectorkit.domains.retail.models.multvae import MultVAE
from sectorkit.domains.retail.models.neumf import NeuMF
from sectorkit.domains.retail.models.sasrec import SASRec

NETWORKS = {"bpr": BPRMF, "lightgcn": LightGCN, "neumf": NeuMF, "multvae": MultVAE, "sasrec": SASRec}

__all__ = ["BPRMF", "LightGCN", "NeuMF", "MultVAE", "SASRec", "NETWORKS"]
