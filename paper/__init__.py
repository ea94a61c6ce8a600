"""`asr-recon paper`: every table and figure of the write-up from one command, reusing finished work.

Sections and their modules: sweeps (DS1 reproduction, DS2), studies (Optuna sensitivity), cost, listening;
`build.build_paper` runs them in order, `report` renders report.md from the CSVs they write.
"""
