"""Delivery feedback from providers: webhook signatures (:mod:`.verify`, :mod:`.sns`),
normalised events (:mod:`.normalize`) and where they are kept (:mod:`.store`)."""
