"""The worklist as people see it, in one rendering: the static pages (``xray-spark worklist``) and the web app read
the lake through one reader (:class:`~xray_spark.pages.lake_view.LakeView`) and show it through one set of
templates (:mod:`xray_spark.pages.render`); only their links differ (embedded pictures and relative pages, or the
app's own URLs)."""
