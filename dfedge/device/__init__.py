"""Everything a bundle runs on a device, in one package that imports only itself, the standard library, numpy and
the bundle's runtime: the manifest and its verification (`manifest`, `schema`), one module per runtime format
(`formats/`), photo and video input (`image`, `video`), face detection behind a detector interface (`faces/`,
MTCNN one implementation), alignment (`align`), verdicts and the plausibility guard (`verdict`), `Scorer`
(`scorer`), `Stream` (`stream`), host facts (`host`), on-device validation (`validation`), timing (`bench`) and the
command line (`cli`).

The kit imports it as its ground floor (`dfedge.device`); every bundle carries a copy of it as `dfedge_device/`
beside a few-line entry script (`bench.py`, from `entry.py`) that checks every file of the bundle against the
manifest's SHA-256 before it imports anything of this package. Importing this package imports no runtime: each
format's runtime is imported when a session of it is opened.
"""
