"""Pixel judges that referee every model we train: OpenNSFW, NudeNet and the EmojiWorld judge's harm
score (:mod:`scdpo.judges.nsfw`). Below ``cost/`` and ``eval/``: both use them, neither is used here."""
