"""Readers, bad-input handling, bundled stations, scaling on the training span and lazy windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.io import read_table
from sectorkit.domains.agriculture.readers import read_series_table, validate_series, validate_yield
from sectorkit.domains.agriculture.sample import load_station, synthetic_weather, synthetic_yield
from sectorkit.domains.agriculture.weather.windows import (
    SeriesStats,
    WindowDataset,
    build_panel,
    fit_stats,
    stage_origins,
    train_end_rows,
)


def _frame(n_days: int = 120, n_series: int = 2) -> pd.DataFrame:
    return synthetic_weather(n_series=n_series, n_days=n_days, seed=1)


def test_bundled_stations_are_complete_daily_series():
    for name, years in {"seattle": (2012, 2015), "champion": (1982, 2018)}.items():
        frame = load_station(name)
        checked = validate_series(frame, name, "tmax", ["tmin", "precip"])
        assert len(checked) == len(frame)
        assert (checked["date"].dt.year.min(), checked["date"].dt.year.max()) == years
        assert checked["tmax"].between(-40, 45).all()


def test_csv_and_parquet_round_trip(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "w.csv", index=False)
    frame.to_parquet(tmp_path / "w.parquet", index=False)
    a = validate_series(read_table(tmp_path / "w.csv"), "w.csv", "tmax", ["tmin"])
    b = validate_series(read_table(tmp_path / "w.parquet"), "w.parquet", "tmax", ["tmin"])
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "w.xlsx").write_text("x")
        read_table(tmp_path / "w.xlsx")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "missing.csv")


def _write_aquacrop(path, frame: pd.DataFrame) -> None:
    """The whitespace layout of AquaCrop's climate files (header names as in aquacrop's Hyderabad file)."""
    lines = ["Day\tMonth\tYear\tMinTemp\tMaxTemp\tPrecipitation\tReferenceET"]
    for row in frame.itertuples():
        lines.append(f"{row.date.day}\t{row.date.month}\t{row.date.year}\t{row.tmin}\t{row.tmax}\t{row.precip}\t1.5")
    path.write_text("\n".join(lines) + "\n")


def test_folder_of_station_files_and_aquacrop_climate_files(tmp_path):
    frame = _frame(n_series=2)
    first, second = (g.drop(columns="series_id") for _, g in frame.groupby("series_id", sort=True))
    folder = tmp_path / "stations"
    folder.mkdir()
    first.assign(et0=1.5).to_csv(folder / "north.csv", index=False)
    _write_aquacrop(folder / "south_climate.txt", second)
    (folder / "notes.md").write_text("not a table")

    south = read_series_table(folder / "south_climate.txt")
    assert list(south.columns) == ["date", "tmin", "tmax", "precip", "et0"] and len(south) == len(second)
    np.testing.assert_allclose(south["tmax"], second["tmax"])
    assert (south["date"].to_numpy() == second["date"].to_numpy()).all()

    both = validate_series(read_series_table(folder), str(folder), "tmax", ["tmin", "precip", "et0"])
    assert sorted(both["series_id"].unique()) == ["north", "south_climate"]
    assert both.groupby("series_id").size().tolist() == [len(first), len(second)]

    # the data module reads the folder as it reads one long file
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule

    dm = WeatherDataModule(path=str(folder), lookback=14, covariates=["tmin"], batch_size=8)
    dm.setup("fit")
    assert dm.stats.series == ["north", "south_climate"]


def test_bad_station_folders_and_climate_files_name_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="the folder has no station files"):
        read_series_table(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    frame = _frame(n_series=1).drop(columns="series_id")
    frame.to_csv(mixed / "a.csv", index=False)
    frame.drop(columns="precip").to_csv(mixed / "b.csv", index=False)
    with pytest.raises(DataError, match=r"b\.csv: columns .* differ from a\.csv"):
        read_series_table(mixed)
    short = tmp_path / "short.txt"
    short.write_text("Day Month Year Tmin Tmax\n1 1 2000 1.0 5.0\n")
    with pytest.raises(DataError, match=r"short\.txt: an AquaCrop climate file needs the columns"):
        read_series_table(short)
    bad_date = tmp_path / "bad_date.txt"
    bad_date.write_text("Day Month Year Tmin Tmax Prcp Et0\n31 2 2000 1 5 0 1\n")
    with pytest.raises(DataError, match=r"bad_date\.txt: row 0 has no valid Day/Month/Year"):
        read_series_table(bad_date)


def test_unsorted_rows_are_sorted():
    frame = _frame()
    shuffled = frame.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(validate_series(shuffled, "f", "tmax"), validate_series(frame, "f", "tmax"))


def test_duplicated_dates_raise():
    frame = _frame()
    with pytest.raises(DataError, match=r"duplicated \(series, date\)"):
        validate_series(pd.concat([frame, frame.iloc[[5]]]), "f.csv", "tmax")


def test_gaps_raise_unless_filling_is_configured():
    frame = _frame().drop(index=[10, 11])
    with pytest.raises(DataError, match="gap in dates.*data.fill_gaps=interpolate"):
        validate_series(frame, "f.csv", "tmax")
    filled = validate_series(frame, "f.csv", "tmax", fill_gaps="interpolate", max_gap=3)
    assert len(filled) == len(_frame())
    row = filled.iloc[10]
    assert (
        min(frame.loc[9, "tmax"], frame.loc[12, "tmax"])
        <= row["tmax"]
        <= max(frame.loc[9, "tmax"], frame.loc[12, "tmax"])
    )
    with pytest.raises(DataError, match="longer than data.max_gap=1"):
        validate_series(frame, "f.csv", "tmax", fill_gaps="interpolate", max_gap=1)


def test_nan_target_raises_with_file_and_date():
    frame = _frame()
    frame.loc[7, "tmax"] = np.nan
    with pytest.raises(DataError, match=r"f.csv: 1 day\(s\) with a gap in dates or a NaN value"):
        validate_series(frame, "f.csv", "tmax")


def test_short_series_and_missing_columns_raise():
    frame = _frame(n_days=40)
    with pytest.raises(DataError, match="fewer than lookback \\+ horizon = 63"):
        validate_series(frame, "f.csv", "tmax", min_length=63)
    with pytest.raises(DataError, match=r"missing column\(s\) \['wind'\]"):
        validate_series(frame, "f.csv", "tmax", ["wind"])


def test_wrong_units_raise():
    frame = _frame().assign(units="degF")
    with pytest.raises(DataError, match="column 'units' has \\['degF'\\], expected 'degC'"):
        validate_series(frame, "f.csv", "tmax")
    fahrenheit = _frame().assign(tmax=lambda f: f["tmax"] * 9 / 5 + 32 + 40)
    with pytest.raises(DataError, match="outside \\[-70.0, 60.0\\].*wrong units"):
        validate_series(fahrenheit, "f.csv", "tmax")


def test_scaling_uses_training_span_only():
    frame = validate_series(_frame(n_days=200, n_series=1), "f", "tmax", ["tmin"])
    lengths = np.array([200])
    cuts = train_end_rows(lengths, [0.5, 0.2])
    stats = fit_stats(frame, "tmax", ["tmin"], cuts[:, 0])
    changed = frame.copy()
    changed.loc[150:, ["tmax", "tmin"]] += 30.0  # only after the training span
    assert np.allclose(fit_stats(changed, "tmax", ["tmin"], cuts[:, 0]).loc, stats.loc)
    assert stats.loc[0, 1] == pytest.approx(frame["tmin"].iloc[:100].mean())
    with pytest.raises(ConfigError, match="data.split"):
        train_end_rows(lengths, [0.9, 0.2])


def test_optional_covariate_a_station_lacks_is_a_zero_input():
    frame = _frame(n_days=120, n_series=2)
    first = frame["series_id"] == frame["series_id"].iloc[0]
    frame["wind"] = np.where(first, np.nan, np.linspace(1.0, 5.0, len(frame)))
    # a required covariate may not be missing, an optional one may be absent from a whole series
    with pytest.raises(DataError, match="NaN value"):
        validate_series(frame, "f.csv", "tmax", ["tmin", "wind"])
    checked = validate_series(frame, "f.csv", "tmax", ["tmin"], optional_covariates=["wind"])
    lacking = checked["series_id"] == checked["series_id"].iloc[0]
    assert checked.loc[lacking, "wind"].isna().all() and checked.loc[~lacking, "wind"].notna().all()
    # a series that has it keeps the gap rules
    holed = frame.copy()
    holed.loc[holed.index[~first][10], "wind"] = np.nan
    with pytest.raises(DataError, match="NaN value"):
        validate_series(holed, "f.csv", "tmax", ["tmin"], optional_covariates=["wind"])
    filled = validate_series(holed, "f.csv", "tmax", ["tmin"], fill_gaps="interpolate", optional_covariates=["wind"])
    assert filled.loc[filled["series_id"] == filled["series_id"].iloc[-1], "wind"].notna().all()
    assert filled.loc[lacking, "wind"].isna().all()
    # a column absent from the whole table is absent from every series
    assert validate_series(_frame(), "f.csv", "tmax", optional_covariates=["wind"])["wind"].isna().all()

    cuts = train_end_rows(checked.groupby("series_id", sort=False).size().to_numpy(), [0.6, 0.2])
    stats = fit_stats(checked, "tmax", ["tmin", "wind"], cuts[:, 0])
    assert stats.columns_present().tolist() == [[True, True, False], [True, True, True]]
    panel = build_panel(checked, stats, "tmax", ["tmin", "wind"])
    wind = panel.past[:, 2]
    assert not np.isnan(panel.past).any()
    assert (wind[panel.series_index == 0] == 0).all() and wind[panel.series_index == 1].std() > 0.5
    # a series trained with the column must still have it when forecasting
    lost = checked.assign(wind=np.nan)
    with pytest.raises(DataError, match="had column 'wind' when the model was trained"):
        build_panel(lost, stats, "tmax", ["tmin", "wind"])
    # the statistics round-trip through a checkpoint's state, columns present included
    assert SeriesStats.from_state(stats.to_state()).columns_present().tolist() == stats.present.tolist()


def test_bundled_stations_feed_seattle_wind_as_an_optional_input():
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule

    dm = WeatherDataModule(optional_covariates=["wind"])
    dm.setup("fit")
    assert dm.stats.series == ["champion", "seattle"] and dm.panel.past.shape[1] == 7
    wind = dm.panel.past[:, 3]
    assert (wind[dm.panel.series_index == 0] == 0).all()
    train = dm.origins["train"][dm.panel.series_index[dm.origins["train"]] == 1]
    assert abs(wind[train].mean()) < 0.05 and wind[train].std() == pytest.approx(1.0, abs=0.05)


def test_windows_are_lazy_and_never_cross_series():
    frame = validate_series(_frame(n_days=150, n_series=3), "f", "tmax", ["tmin", "precip"])
    lengths = frame.groupby("series_id", sort=False).size().to_numpy()
    cuts = train_end_rows(lengths, [0.6, 0.2])
    stats = fit_stats(frame, "tmax", ["tmin", "precip"], cuts[:, 0])
    panel = build_panel(frame, stats, "tmax", ["tmin", "precip"])
    origins = stage_origins(panel, 28, 7, cuts)
    series = panel.series_index
    for stage, o in origins.items():
        assert (series[o - 27] == series[o]).all() and (series[o + 7] == series[o]).all(), stage
    # one origin per day of each series' test span
    assert len(origins["test"]) == sum(n - b - 7 + 1 for n, (a, b) in zip(lengths, cuts))
    ds = WindowDataset(panel, origins["test"], 28, 7)
    item = ds[3]
    assert item["past"].shape == (28, 6) and item["future"].shape == (7, 3) and item["target"].shape == (7,)
    t = origins["test"][3]
    assert np.allclose(item["target"].numpy(), panel.target[t + 1 : t + 8])
    assert not hasattr(ds, "windows")  # only origins are stored


def test_yield_sample_and_validation():
    yields, weather = synthetic_yield()
    assert set(yields.columns) == {"region", "year", "yield"}
    assert yields.groupby("region").size().nunique() == 1 and yields["yield"].between(1, 20).all()
    with pytest.raises(DataError, match="duplicated region-year"):
        validate_yield(pd.concat([yields, yields.iloc[[0]]]), "y.csv")
    with pytest.raises(DataError, match="column 'yield' has 1 missing"):
        validate_yield(yields.assign(**{"yield": yields["yield"].where(yields.index != 3)}), "y.csv")


def test_yield_weather_of_growing_seasons_only_from_a_file_or_a_station_folder(tmp_path):
    """Users' weather may hold the growing seasons only (as the sample does): it gives the sample's features."""
    from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule

    yields, weather = synthetic_yield()
    yields.to_csv(tmp_path / "yields.csv", index=False)
    weather.to_csv(tmp_path / "weather.csv", index=False)
    folder = tmp_path / "stations"
    folder.mkdir()
    for region, rows in weather.groupby("region"):
        rows.drop(columns="region").to_csv(folder / f"{region}.csv", index=False)
    sample = YieldDataModule()
    expected = sample.load_tables()
    for weather_path in (tmp_path / "weather.csv", folder):
        dm = YieldDataModule(path=str(tmp_path / "yields.csv"), weather_path=str(weather_path))
        pd.testing.assert_frame_equal(dm.load_tables(), expected, check_dtype=False, atol=1e-6)
        assert dm.feature_names == sample.feature_names

    # a two-day hole is interpolated; a ten-day hole leaves that season incomplete, an error naming region and year
    in_1990 = (weather["region"] == "region_0") & (weather["date"].dt.year == 1990)
    season = weather.index[in_1990]
    weather.drop(season[50:52]).to_csv(tmp_path / "weather.csv", index=False)
    dm = YieldDataModule(path=str(tmp_path / "yields.csv"), weather_path=str(tmp_path / "weather.csv"))
    assert len(dm.load_tables()) == len(expected)
    weather.drop(season[50:60]).to_csv(tmp_path / "weather.csv", index=False)
    with pytest.raises(DataError, match=r"gap of 10 days"):
        dm.load_tables()
    weather.drop(season[:10]).to_csv(tmp_path / "weather.csv", index=False)  # the season starts late
    with pytest.raises(DataError, match=r"no complete growing-season weather for region 'region_0' year 1990"):
        dm.load_tables()
    weather.drop(columns="region").to_csv(tmp_path / "weather.csv", index=False)  # one file without region ids
    with pytest.raises(DataError, match=r"weather.csv: missing column 'region' \(data.region_column\)"):
        dm.load_tables()
    # an infinite value in a season names the weather file, its column and row, and the region
    weather.loc[season[5], "precip"] = np.inf
    weather.to_csv(tmp_path / "weather.csv", index=False)
    with pytest.raises(DataError, match=rf"weather\.csv: column 'precip' has 1 infinite value\(s\), the first inf in row {season[5]}"):
        dm.load_tables()


def test_infinite_values_are_refused_naming_the_file_column_and_row(tmp_path):
    """One ``inf`` used to train to a NaN test MAE with exit 0: it is a DataError naming where it is."""
    from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule

    frame = _frame(n_days=120, n_series=1)
    frame.loc[17, "tmin"] = np.inf
    frame.to_csv(tmp_path / "w.csv", index=False)
    with pytest.raises(DataError, match=r"w\.csv: column 'tmin' has 1 infinite value\(s\), the first inf in row 17;"):
        WeatherDataModule(path=str(tmp_path / "w.csv"), lookback=28).setup("fit")
    with pytest.raises(DataError, match=r"f\.csv: column 'tmin' .* in row 17, series_id 'station_0'"):
        validate_series(frame, "f.csv", "tmax", ["tmin"])  # a table built in Python: the series is named too
    validate_series(frame, "f.csv", "tmax", ["precip"])  # a column that is not read is not checked
    with pytest.raises(DataError, match="NaN value"):  # NaN keeps the gap rules
        validate_series(frame.assign(tmin=frame["tmin"].replace(np.inf, np.nan)), "f.csv", "tmax", ["tmin"])
    # in a folder of station files: the file itself ('-inf' and overflowing numbers are infinite too)
    folder = tmp_path / "stations"
    folder.mkdir()
    clean = frame.drop(columns="series_id").assign(tmin=0.0)
    clean.to_csv(folder / "a.csv", index=False)
    text = clean.astype({"precip": str})
    text.loc[3, "precip"] = "-inf"
    text.to_csv(folder / "b.csv", index=False)
    with pytest.raises(DataError, match=r"b\.csv: column 'precip' has 1 infinite value\(s\), the first -inf in row 3"):
        WeatherDataModule(path=str(folder), lookback=28).setup("fit")
    # yield tables: the target and the covariates
    yields, _ = synthetic_yield()
    yields["fertiliser"] = 1.0
    for column, value in (("yield", "inf"), ("fertiliser", "1e400")):
        bad = yields.astype({column: object})
        bad.loc[4, column] = value
        bad.to_csv(tmp_path / "y.csv", index=False)
        dm = YieldDataModule(path=str(tmp_path / "y.csv"), covariates=["fertiliser"])
        with pytest.raises(DataError, match=rf"y\.csv: column '{column}' has 1 infinite value\(s\), the first inf in row 4, region 'region_0'"):
            dm.setup("fit")


def test_day_and_month_that_read_both_ways_need_a_date_format(tmp_path):
    from sectorkit.domains.agriculture.readers import parse_dates

    frame = _frame(n_days=10, n_series=1)  # 1-10 January 2000: every day <= 12
    frame.assign(date=frame["date"].dt.strftime("%d/%m/%Y")).to_csv(tmp_path / "d.csv", index=False)
    raw = read_table(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"^d\.csv: column 'date' has dates that read both day-first and month-first: "
                                         r"'02/01/2000' \(row 1\) is 2000-01-02 day-first or 2000-02-01 month-first; "
                                         r"set data.date_format \('%d/%m/%Y' or '%m/%d/%Y'\)$"):
        validate_series(raw, "d.csv", "tmax")
    checked = validate_series(raw, "d.csv", "tmax", date_format="%d/%m/%Y")
    assert (checked["date"].to_numpy() == frame["date"].to_numpy()).all()
    with pytest.raises(DataError, match=r"unparseable date '01/01/2000' \(row 0\) \(expected data.date_format='%Y-%m-%d'\)"):
        validate_series(raw, "d.csv", "tmax", date_format="%Y-%m-%d")
    # a day above 12 settles the order either way; ISO dates have one reading; short years are guessed per value
    longer = _frame(n_days=40, n_series=1)["date"]
    for fmt in ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y %H:%M", "%Y-%m-%d"):
        assert (parse_dates(longer.dt.strftime(fmt), "f", "date") == longer).all(), fmt
    with pytest.raises(DataError, match="read both day-first and month-first: '3/4/01'"):
        parse_dates(pd.Series(["3/4/01", "3/5/01"]), "f", "date")
    # the option reaches the file through the config
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule

    frame = _frame(n_days=60, n_series=1)
    frame.assign(date=frame["date"].dt.strftime("%m/%d/%Y")).head(12).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"m\.csv: column 'date' has dates that read both"):
        WeatherDataModule(path=str(tmp_path / "m.csv")).load_frame(0)
    read = WeatherDataModule(path=str(tmp_path / "m.csv"), date_format="%m/%d/%Y").load_frame(0)
    assert (read["date"].to_numpy() == frame["date"].head(12).to_numpy()).all()
