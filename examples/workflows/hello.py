# The python-hello workflow's script.
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--who", default="world")
print(f"Hello from Python, {parser.parse_args().who}!")
