"""The span model and wire protocols shared by the mesh (which produces spans) and the collector
(which receives, stores and graphs them). Nothing here does I/O."""
