from .heads import SequenceHead, TokenHead
from .model import MultiTaskModel, MultiTaskOutput


__all__ = ["MultiTaskModel", "MultiTaskOutput", "SequenceHead", "TokenHead"]
