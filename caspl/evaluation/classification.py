"""Classification evaluator; prints its result block in Dassl's format (one decimal), which
the log parsers read."""
from collections import OrderedDict

import torch


class Classification:
    def __init__(self, classnames=None, per_class=False):
        self.classnames = classnames
        self.per_class = per_class
        self.reset()

    def reset(self):
        self.y_true, self.y_pred = [], []

    def process(self, logits, labels):
        self.y_pred.append(logits.argmax(dim=1).cpu())
        self.y_true.append(labels.cpu())

    def merge(self, gather):
        """Replace this process's predictions by every process's (`gather` concatenates a tensor over them)."""
        for name in ("y_true", "y_pred"):
            part = torch.cat(getattr(self, name)) if getattr(self, name) else torch.zeros(0, dtype=torch.long)
            setattr(self, name, [gather(part)])

    def evaluate(self, verbose=True):
        y_true = torch.cat(self.y_true) if self.y_true else torch.zeros(0, dtype=torch.long)
        y_pred = torch.cat(self.y_pred) if self.y_pred else torch.zeros(0, dtype=torch.long)
        total = len(y_true)
        correct = int((y_true == y_pred).sum())
        acc = 100.0 * correct / max(total, 1)
        results = OrderedDict(accuracy=acc, error_rate=100.0 - acc, macro_f1=100.0 * macro_f1(y_true, y_pred))
        per_class_acc = {}
        for label in y_true.unique().tolist():
            mask = y_true == label
            per_class_acc[label] = 100.0 * float((y_pred[mask] == label).float().mean())
        if self.per_class and per_class_acc:
            results["perclass_accuracy"] = sum(per_class_acc.values()) / len(per_class_acc)
        if verbose:
            print("=> result")
            print(f"* total: {total:,}")
            print(f"* correct: {correct:,}")
            print(f"* accuracy: {acc:.1f}%")
            print(f"* error: {100.0 - acc:.1f}%")
            print(f"* macro_f1: {results['macro_f1']:.1f}%")
            if self.per_class:
                print("=> per-class result")
                for label, a in sorted(per_class_acc.items()):
                    name = self.classnames[label] if self.classnames else label
                    print(f"* class: {label} ({name})\taccuracy: {a:.1f}%")
                print(f"* average: {results['perclass_accuracy']:.1f}%")
        return results


def macro_f1(y_true, y_pred):
    """Mean F1 over the labels present in y_true (as sklearn's f1_score(labels=unique(y_true)))."""
    scores = []
    for label in y_true.unique().tolist():
        tp = int(((y_pred == label) & (y_true == label)).sum())
        fp = int(((y_pred == label) & (y_true != label)).sum())
        fn = int(((y_pred != label) & (y_true == label)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0
