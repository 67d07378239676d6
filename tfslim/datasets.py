"""Small real data sets that ship with installed packages: no download, ever.

- `load_digits_data`: scikit-learn's 8x8 digits (1,797 images). Easy: most models reach
  97-99%, so it shows that a technique keeps quality, not that size matters.
- `load_mnist1d`: MNIST-1D (Greydanus 2020), generated locally by the `mnist1d` package
  (4,000 train / 1,000 test sequences of length 40). Hard enough that model size shows in
  quality (published: MLP about 68%, CNN about 94%), so it is the data set for
  footprint-versus-quality questions.
"""

__all__ = ["load_digits_data", "load_mnist1d"]


def load_digits_data(seed: int = 0):
    """Digits as (x_train, y_train, x_test, y_test): 8x8x1 float32 images in [0, 1].

    Args:
        seed: int. Seed of the stratified 80/20 split. Defaults to `0`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return x_train, y_train, x_test, y_test


def load_mnist1d(seed: int | None = None):
    """MNIST-1D as (x_train, y_train, x_test, y_test): (N, 40, 1) float32 and int64 labels.

    Args:
        seed: int or None. Generator seed; None keeps the package's default (the data set
            of the paper). Defaults to `None`.

    Raises:
        ImportError: when the `mnist1d` package is not installed (it is in the test extras).
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError("load_mnist1d needs the `mnist1d` package: pip install mnist1d") from e
    args = get_dataset_args()
    if seed is not None:
        args.seed = seed
    data = make_dataset(args)
    x_train = data["x"].astype("float32")[..., None]
    x_test = data["x_test"].astype("float32")[..., None]
    return x_train, data["y"].astype("int64"), x_test, data["y_test"].astype("int64")
