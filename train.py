"""python train.py [group=option ...] [-m sweep] — see README.md."""
from dltrain.cli import main

if __name__ == "__main__":
    main()
