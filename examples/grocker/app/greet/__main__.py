import sys

from greet import greeting


def main():
    print(f"{greeting()} (Python {sys.version_info.major}.{sys.version_info.minor})")


if __name__ == "__main__":
    main()
