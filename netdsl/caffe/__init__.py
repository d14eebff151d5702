"""Caffe interop: prototxt import (importer.py), deploy prototxt export (exporter.py) and .caffemodel
weights (weights.py; needs the protobuf package). See docs/caffe.md."""
