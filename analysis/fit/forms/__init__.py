"""Curve families: ``base`` (the Form contract and profiled engine), ``families`` (M1-M4),
``bnsl`` (broken neural scaling laws), ``registry`` (FORMS and AUTO: the one table of
families), ``bounds`` (the metric's range and shared helpers), ``fit`` (fit one family or
``auto``), ``selection`` (rolling-origin choice), ``prediction``, ``on_curves`` (families on a
sweep's curves). Inside: everything imports ``registry``/``bounds``/``base``, never back.
"""
