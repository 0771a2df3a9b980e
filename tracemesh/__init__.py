"""Tracemesh: the command line that ties the mesh and the collector together."""
