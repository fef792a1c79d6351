"""Browser visualization: a Mesa SolaraViz app over ``MarrowModel`` (``marrow-abm viz``).

Modules: ``render`` (numpy/Pillow tissue raster), ``plots`` (DataCollector panels),
``params`` (controls from the scenario schema), ``inspect`` (what is at a voxel),
``components`` (Solara components), ``app`` (the page), ``cli`` (the ``viz`` sub-command).
Importing this package imports neither Solara nor Mesa's visualization.
"""
