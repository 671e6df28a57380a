"""What evaluation and training share about the image, below both of them.

- `pgd`: projected gradient descent in pixel space (the adversarial probe, MBPO's hard negatives)
  and its same-budget noise ablation; pure torch behind an objective function;
- `iig`: Image Information Gain (the `iig` probe, MBPO's selection), with its null images;
- `images`: the probes' stand-in images (mismatched assignment, noise) and their seeds.

`evaluation/` and `trainers/` both import from here and never from each other
(tests/test_foundation_imports.py). Torch is imported by `pgd` and `iig` only.
"""
