"""The data model, declared once as data: the seed document contract and the warehouse's tables.

Each document-table column says where its value comes from: a frontmatter field (with the
contract's kind, whether it is required, and what it means) or a derivation (ids, positions,
body, provenance). From these declarations come the contract checker (``read/contract.py``),
the row builder (``read/normalize.py``), Arrow schemas, DuckDB views and comments, post-load
checks (keys, parents, references, id formats), sort orders, the data dictionary, the ER
diagram and the README table list; nothing else names a column, a type or a field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

# Logical type name -> Arrow type. Timestamps are UTC microseconds everywhere.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<string>": pa.list_(pa.string()),
}

# Logical type name -> DuckDB type of the catalog's views (and `pipeline query`), as DESCRIBE shows it.
# Timestamps: the views hand out UTC wall time as a plain TIMESTAMP (see UTC_TIMESTAMP_SQL), so a
# client groups and filters by UTC days and months whatever its machine's time zone; the Parquet
# files (and the Delta tables over them) keep TIMESTAMP WITH TIME ZONE, UTC (PARQUET_DUCKDB_TYPES).
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "list<string>": "VARCHAR[]",
}
# The same, for DuckDB's read_parquet() straight on the files.
PARQUET_DUCKDB_TYPES: dict[str, str] = {**DUCKDB_TYPES, "timestamp": "TIMESTAMP WITH TIME ZONE"}

# A stored instant (TIMESTAMP WITH TIME ZONE, UTC) as UTC wall time, a plain TIMESTAMP. DuckDB applies
# the session time zone, which it takes from the machine (TZ), to every TIMESTAMP WITH TIME ZONE it
# truncates, casts, formats or compares with a literal; a BI server in New York would otherwise put
# 2024-03-01T02:30Z in February. Epoch arithmetic needs no time zone data (no ICU) and gives the
# same result on an input that is already a UTC TIMESTAMP, so the expression is safe to apply twice.
UTC_TIMESTAMP_SQL = "make_timestamp(epoch_us({}))"

# Contract kind of a frontmatter field -> the column type it loads into.
KIND_TYPES = {"text": "string", "url": "string", "int": "int64", "bool": "bool", "timestamp": "timestamp"}

# How derived columns are computed (read/normalize.py implements each name).
DERIVATIONS = {
    "article_id": "hash id of the document's canonical identity URL (webUrl, else originalUrl)",
    "position": "0-based position of the entry in its list",
    "related_position": "position of the related entry that holds the image",
    "related_article_id": "hash id of the entry's canonical webUrl",
    "provider_id": "hash id of the entry's canonical provider domain",
    "body": "the Markdown after the frontmatter",
    "extra": "unknown keys of the entry as JSON",
    "source_path": "the file's path relative to the seeds root",
    "source_sha256": "SHA-256 of the file's bytes",
    "run_id": "the run that loaded the file",
}
ID_PATTERN = "^[0-9a-f]{16}$"  # every hash id: 16 lower-case hex digits


@dataclass(frozen=True)
class DocField:
    """A frontmatter field that feeds a column: its path within the table's entry and the contract's rule."""

    path: str  # "webUrl", "provider.domain"; "" for a list entry that is itself the value (topics)
    kind: str  # text | url | int | bool | timestamp
    about: str  # what the field means (the contract's documentation)
    required: bool = False  # within its entry (a required field of an optional object is required when it is there)


@dataclass(frozen=True)
class Reference:
    """A foreign key: this column's values are ``table.column`` values (checked when ``enforced``)."""

    table: str
    column: str
    enforced: bool = True
    note: str = ""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    nullable: bool = True
    field: DocField | None = None  # from the frontmatter ...
    derived: str | None = None  # ... or computed (a DERIVATIONS name)
    references: Reference | None = None
    hash_id: bool = False  # values must match ID_PATTERN


@dataclass(frozen=True)
class Entry:
    """Where a document table's rows come from: the document itself, or each entry of a list in it."""

    path: str  # "" (the document), "topics", "images", "related", "related[].images"
    kind: str  # document | text_list | object_list
    about: str  # the contract's description of the list
    objects: tuple[tuple[str, str], ...] = ()  # nested mappings in each entry: (key, about), e.g. provider


@dataclass(frozen=True)
class Table:
    name: str
    grain: str
    key: tuple[str, ...]
    description: str
    columns: tuple[Column, ...]
    # Child tables name their parent and the columns that reference it.
    parent: str | None = None
    parent_key: tuple[str, ...] = field(default=())
    # Partitioned tables are stored as one file per publication month.
    partitioned: bool = False
    entry: Entry | None = None  # document tables: where the rows come from
    sort_key: tuple[str, ...] = ()  # row order within each file

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name}")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in self.columns],
            metadata={"table": self.name, "grain": self.grain},
        )


def _c(name: str, type_: str, description: str, nullable: bool = True, **kw: object) -> Column:
    return Column(name, type_, description, nullable, **kw)  # type: ignore[arg-type]


def _f(name: str, path: str, kind: str, description: str, about: str, required: bool = False) -> Column:
    """A column loaded from a frontmatter field (its type follows the field's kind).

    NOT NULL when the field is required in its entry itself (not inside an optional mapping).
    """
    nullable = not required or "." in path
    return Column(name, KIND_TYPES[kind], description, nullable, field=DocField(path, kind, about, required))


def _d(name: str, type_: str, derivation: str, description: str, nullable: bool = True, **kw: object) -> Column:
    """A derived column."""
    return Column(name, type_, description, nullable, derived=derivation, **kw)  # type: ignore[arg-type]


ID = "16 lower-case hex digits: the first 64 bits of a SHA-256"
EXTRA = (
    "frontmatter keys of this entry that the contract does not know, "
    "as a JSON object (values as written); NULL when none"
)
HOSTS = "(scheme and host lower-cased, a trailing dot dropped, international names as IDNA/punycode)"
PROVIDERS_REF = Reference("providers", "provider_id")
IMAGE_FIELDS = (
    _f("url", "url", "url", "image URL as written", "image URL (an absolute http(s) URL)"),
    _f("width", "width", "int", "width in pixels", "width in pixels (integer >= 0)"),
    _f("height", "height", "int", "height in pixels", "height in pixels (integer >= 0)"),
    _f("is_cached", "isCached", "bool", "isCached flag", "whether the image is cached upstream (true/false)"),
    _d("extra", "string", "extra", EXTRA),
)
PROVIDER = ("provider", "who published it: name and domain")

ARTICLES = Table(
    name="articles",
    grain="one row per seed document's article",
    key=("article_id",),
    description="Articles, one per loaded seed document (duplicates of an identity URL are in rejects).",
    partitioned=True,
    entry=Entry("", "document", "a seed document's frontmatter", objects=(PROVIDER,)),
    sort_key=("published_at", "article_id"),
    columns=(
        _d(
            "article_id",
            "string",
            "article_id",
            f"key: {ID} of the canonical identity URL (webUrl, else originalUrl) {HOSTS}",
            False,
            hash_id=True,
        ),
        _f(
            "web_url",
            "webUrl",
            "url",
            "webUrl as written",
            "canonical article URL; the identity URL (required unless originalUrl is given)",
        ),
        _f(
            "original_url",
            "originalUrl",
            "url",
            "originalUrl as written",
            "URL at the source; identity URL when webUrl is missing",
        ),
        _f("amp_web_url", "ampWebUrl", "text", "ampWebUrl as written", "AMP page URL"),
        _f("cdn_amp_web_url", "cdnAmpWebUrl", "text", "cdnAmpWebUrl as written", "AMP cache URL"),
        _f("title", "title", "text", "headline", "headline; must not be empty", required=True),
        _f("excerpt", "excerpt", "text", "short summary", "short summary"),
        _f("category", "category", "text", "category label, e.g. news", "category label"),
        _f("type", "type", "text", "content type, e.g. article", "content type, e.g. article"),
        _f(
            "published_at",
            "publishedDateTime",
            "timestamp",
            "publishedDateTime in UTC, to the microsecond (no zone read as UTC; a bare date as midnight UTC; "
            "digits beyond microseconds dropped)",
            "publication time, RFC 3339 / ISO 8601; no zone means UTC",
        ),
        _f("quality", "quality", "int", "quality score", "quality score"),
        _f("heat", "heat", "int", "heat score (-1 when unknown upstream)", "heat score"),
        _f("is_published", "published", "bool", "the published flag", "published flag (true/false)"),
        _d(
            "provider_id",
            "string",
            "provider_id",
            f"references providers: {ID} of the canonical provider domain {HOSTS}",
            references=PROVIDERS_REF,
            hash_id=True,
        ),
        _f(
            "provider_domain",
            "provider.domain",
            "text",
            "provider domain as written in this document",
            "provider's domain, e.g. wsj.com",
            required=True,
        ),  # fmt: skip
        _f(
            "provider_name",
            "provider.name",
            "text",
            "provider name as written in this document",
            "display name of the provider",
        ),
        _f("secured", "secured", "text", "opaque secured string, as written", "opaque string, stored as written"),
        _d(
            "body",
            "string",
            "body",
            "Markdown body after the frontmatter (leading blank lines and trailing whitespace trimmed); NULL when empty",
        ),
        _d("extra", "string", "extra", EXTRA),
        _d("source_path", "string", "source_path", "seed file path relative to the seeds folder, '/'-separated", False),
        _d("source_sha256", "string", "source_sha256", "SHA-256 of the seed file's bytes", False),
        _d("run_id", "string", "run_id", "run that loaded this version of the document", False),
    ),
)

ARTICLE_TOPICS = Table(
    name="article_topics",
    grain="one row per topic of an article",
    key=("article_id", "position"),
    description="Topics of each article, in document order.",
    parent="articles",
    parent_key=("article_id",),
    partitioned=True,
    entry=Entry("topics", "text_list", "topic labels"),
    sort_key=("article_id", "position"),
    columns=(
        _d("article_id", "string", "article_id", "references articles", False),
        _d("position", "int32", "position", "0-based position in the topics list", False),
        _f("topic", "", "text", "topic as written", "a topic label", required=True),
    ),
)

ARTICLE_IMAGES = Table(
    name="article_images",
    grain="one row per image of an article",
    key=("article_id", "position"),
    description="Images of each article, in document order.",
    parent="articles",
    parent_key=("article_id",),
    partitioned=True,
    entry=Entry("images", "object_list", "images of the article"),
    sort_key=("article_id", "position"),
    columns=(
        _d("article_id", "string", "article_id", "references articles", False),
        _d("position", "int32", "position", "0-based position in the images list", False),
        *IMAGE_FIELDS,
    ),
)

RELATED_ARTICLES = Table(
    name="related_articles",
    grain="one row per related entry of an article",
    key=("article_id", "position"),
    description=(
        "Related entries listed by each article; related_article_id joins to articles when the target is itself a seed."
    ),
    parent="articles",
    parent_key=("article_id",),
    partitioned=True,
    entry=Entry("related", "object_list", "related articles", objects=(PROVIDER,)),
    sort_key=("article_id", "position"),
    columns=(
        _d("article_id", "string", "article_id", "references articles (the article that lists the entry)", False),
        _d("position", "int32", "position", "0-based position in the related list", False),
        _d(
            "related_article_id",
            "string",
            "related_article_id",
            f"{ID} of the entry's canonical webUrl; same derivation as articles.article_id",
            False,
            references=Reference("articles", "article_id", enforced=False, note="when the target is a seed"),
            hash_id=True,
        ),
        _f(
            "web_url",
            "webUrl",
            "url",
            "webUrl as written",
            "URL of the related article; joins to articles when it is a seed",
            required=True,
        ),  # fmt: skip
        _f("title", "title", "text", "title as written", "title"),
        _f("excerpt", "excerpt", "text", "excerpt as written", "short summary"),
        _f(
            "published_at",
            "publishedDateTime",
            "timestamp",
            "publishedDateTime in UTC",
            "publication time, RFC 3339 / ISO 8601",
        ),
        _f("type", "type", "text", "content type", "content type"),
        _f("quality", "quality", "int", "quality score", "quality score"),
        _d("provider_id", "string", "provider_id", "references providers", references=PROVIDERS_REF, hash_id=True),
        _f(
            "provider_domain",
            "provider.domain",
            "text",
            "provider domain as written in this entry",
            "provider's domain, e.g. wsj.com",
            required=True,
        ),  # fmt: skip
        _f(
            "provider_name",
            "provider.name",
            "text",
            "provider name as written in this entry",
            "display name of the provider",
        ),
        _d("extra", "string", "extra", EXTRA),
    ),
)

RELATED_ARTICLE_IMAGES = Table(
    name="related_article_images",
    grain="one row per image of a related entry",
    key=("article_id", "related_position", "position"),
    description="Images of each related entry, in document order.",
    parent="related_articles",
    parent_key=("article_id", "related_position"),
    partitioned=True,
    entry=Entry("related[].images", "object_list", "images of the related article"),
    sort_key=("article_id", "related_position", "position"),
    columns=(
        _d("article_id", "string", "article_id", "references articles", False),
        _d(
            "related_position",
            "int32",
            "related_position",
            "position of the related entry (references related_articles)",
            False,
        ),
        _d("position", "int32", "position", "0-based position in the entry's images list", False),
        *IMAGE_FIELDS,
    ),
)

PROVIDERS = Table(
    name="providers",
    grain="one row per provider domain",
    key=("provider_id",),
    description=(
        "Providers of articles and of related entries. When one domain appears under several names, "
        "the name used by the most rows wins; ties go to the alphabetically first name."
    ),
    columns=(
        _c("provider_id", "string", f"key: {ID} of the canonical domain", False, hash_id=True),
        _c("domain", "string", f"canonical domain {HOSTS}", False),
        _c("name", "string", "chosen display name (rule in the table description)"),
        _c("names", "list<string>", "every name seen for this domain, sorted", False),
        _c("article_count", "int64", "articles from this provider", False),
        _c("related_count", "int64", "related entries from this provider", False),
    ),
)

LOAD_RUNS = Table(
    name="load_runs",
    grain="one row per pipeline run",
    key=("run_id",),
    description="Every run that published a snapshot, with its accounting and row counts.",
    columns=(
        _c("run_id", "string", "key: UTC start time plus a random suffix", False),
        _c("started_at", "timestamp", "start of the pipeline's own work (orchestrator start-up excluded)", False),
        _c("finished_at", "timestamp", "end of the pipeline's own work", False),
        _c("status", "string", "completed (runs that fail publish nothing and leave no row)", False),
        _c("seeds_dir", "string", "seeds folder or object-store URL (s3://bucket/prefix) the run read", False),
        _c("files_seen", "int64", "files discovered (and folders that could not be listed)", False),
        _c("files_new", "int64", "files loaded for the first time", False),
        _c("files_changed", "int64", "files whose content changed and were reloaded", False),
        _c("files_unchanged", "int64", "files skipped because size+mtime or content hash matched", False),
        _c("files_deleted", "int64", "files gone since the previous run", False),
        _c("files_loaded", "int64", "files currently loaded (one article each)", False),
        _c("files_rejected", "int64", "files currently quarantined (see rejects), duplicates excluded", False),
        _c("files_duplicate", "int64", "files whose identity URL another file holds (also in rejects)", False),
        _c("files_parsed", "int64", "files this run read and parsed", False),
        _c(
            "files_unlisted",
            "int64",
            "files kept exactly as they were because their folder or prefix could not be listed",
        ),
        _c("rows_articles", "int64", "rows in articles after the run", False),
        _c("rows_article_topics", "int64", "rows in article_topics after the run", False),
        _c("rows_article_images", "int64", "rows in article_images after the run", False),
        _c("rows_related_articles", "int64", "rows in related_articles after the run", False),
        _c("rows_related_article_images", "int64", "rows in related_article_images after the run", False),
        _c("rows_providers", "int64", "rows in providers after the run", False),
        _c("new_unknown_keys", "list<string>", "frontmatter keys outside the contract first seen in this run", False),
        _c("snapshot_id", "string", "snapshot this run published", False),
    ),
)

REJECTS = Table(
    name="rejects",
    grain="one row per input file currently not loaded",
    key=("source_path",),
    description="Quarantined files with the reason; a file leaves this table once it loads or disappears.",
    columns=(
        _c(
            "source_path",
            "string",
            "key: seed file path relative to the seeds folder; a folder that could not be listed ends in '/'",
            False,
        ),
        _c("source_sha256", "string", "SHA-256 of the file's bytes (NULL when it could not be read)"),
        _c("stage", "string", "read, decode, frontmatter, yaml, contract or duplicate", False),
        _c("reason", "string", "stable reason code, e.g. yaml_syntax (every code: docs/rejects.md)", False),
        _c("message", "string", "what is wrong, where, and what was expected", False),
        _c("line", "int64", "1-based line in the file, when known"),
        _c("column", "int64", "1-based column in the file, when known"),
        _c("field", "string", "field path such as related[2].images[0].width, when known"),
        _c("run_id", "string", "run that quarantined this version of the file", False),
    ),
)

SOURCE_FILES = Table(
    name="source_files",
    grain="one row per discovered input file",
    key=("source_path",),
    description="The manifest: what the last run saw of each input file and what became of it.",
    columns=(
        _c("source_path", "string", "key: path relative to the seeds folder", False),
        _c("size", "int64", "size in bytes (NULL when the file was refused before it was read)"),
        _c(
            "mtime_ns",
            "int64",
            "modification time (objects: last-modified), nanoseconds since the epoch (NULL when refused before reading)",
        ),
        _c("etag", "string", "object stores: the ETag listed for the object (an unchanged ETag is never fetched)"),
        _c("source_sha256", "string", "SHA-256 of the bytes (NULL when unreadable)"),
        _c("status", "string", "loaded, rejected or duplicate", False),
        _c(
            "article_id",
            "string",
            "article the file produced (also for duplicates: the id it claims)",
            references=Reference("articles", "article_id", enforced=False, note="when the file is loaded"),
        ),
        _c("partition", "string", "publication month (YYYY-MM, or 'undated') holding the article's rows"),
        _c("unknown_keys", "list<string>", "frontmatter key paths outside the contract (kept in extra columns)"),
        _c("stage", "string", "for rejected files: stage that refused it"),
        _c("reason", "string", "for rejected files: reason code"),
        _c("message", "string", "for rejected files: what is wrong and what was expected"),
        _c("line", "int64", "for rejected files: 1-based line, when known"),
        _c("column", "int64", "for rejected files: 1-based column, when known"),
        _c("field", "string", "for rejected files: field path, when known"),
        _c("run_id", "string", "run that loaded or rejected this version of the file (a touch keeps it)", False),
    ),
)

UNKNOWN_KEYS = Table(
    name="unknown_keys",
    grain="one row per frontmatter key path outside the contract",
    key=("key_path",),
    description="Schema drift: keys kept in extra columns, how many loaded files use them, and when first seen.",
    columns=(
        _c("key_path", "string", "key path such as author or related[].images[].alt", False),
        _c("file_count", "int64", "loaded files that use the key", False),
        _c("first_seen_run_id", "string", "run that first saw the key", False),
    ),
)

TABLES: tuple[Table, ...] = (
    ARTICLES,
    ARTICLE_TOPICS,
    ARTICLE_IMAGES,
    RELATED_ARTICLES,
    RELATED_ARTICLE_IMAGES,
    PROVIDERS,
    LOAD_RUNS,
    REJECTS,
    SOURCE_FILES,
    UNKNOWN_KEYS,
)


@dataclass(frozen=True)
class DerivedView:
    """A convenience view for analysts and BI tools, defined over the tables above."""

    name: str
    grain: str
    description: str
    sql: str


# published_at and its date parts are UTC wall time whatever the session's time zone, also when the
# view runs over tables that still hold TIMESTAMP WITH TIME ZONE (UTC_TIMESTAMP_SQL is idempotent).
ARTICLE_FACTS = DerivedView(
    name="article_facts",
    grain="one row per article",
    description=(
        "Analysis-ready articles: provider name and domain, UTC date parts, topic list, "
        "and counts of images, related entries and related entries that are themselves seeds."
    ),
    sql="""
SELECT a.article_id, a.title, a.category, a.type, a.published_at,
       CAST(a.published_at AS DATE) AS published_date,
       year(a.published_at) AS published_year,
       month(a.published_at) AS published_month,
       strftime(a.published_at, '%Y-%m') AS published_year_month,
       a.quality, a.heat, a.is_published,
       a.provider_id, p.name AS provider_name, p.domain AS provider_domain,
       coalesce(t.topics, []) AS topics,
       coalesce(t.n, 0) AS topic_count,
       coalesce(i.n, 0) AS image_count,
       coalesce(r.n, 0) AS related_count,
       coalesce(r.seeds, 0) AS related_seed_count,
       a.web_url, a.source_path
FROM (SELECT * REPLACE (make_timestamp(epoch_us(published_at)) AS published_at) FROM articles) a
LEFT JOIN providers p USING (provider_id)
LEFT JOIN (SELECT article_id, list(topic ORDER BY position) AS topics, count(*) AS n
           FROM article_topics GROUP BY article_id) t USING (article_id)
LEFT JOIN (SELECT article_id, count(*) AS n FROM article_images GROUP BY article_id) i USING (article_id)
LEFT JOIN (SELECT r.article_id, count(*) AS n, count(x.article_id) AS seeds
           FROM related_articles r LEFT JOIN articles x ON x.article_id = r.related_article_id
           GROUP BY r.article_id) r USING (article_id)
""",
)

RELATED_RESOLVED = DerivedView(
    name="related_resolved",
    grain="one row per related entry of an article",
    description=(
        "Related entries with their target article resolved when the target is itself a seed "
        "(target_* columns NULL otherwise)."
    ),
    sql="""
SELECT r.article_id, r.position, r.related_article_id,
       r.web_url, r.title, r.published_at, r.provider_id,
       t.article_id IS NOT NULL AS target_is_seed,
       t.title AS target_title, t.published_at AS target_published_at,
       t.provider_id AS target_provider_id, t.source_path AS target_source_path
FROM related_articles r
LEFT JOIN articles t ON t.article_id = r.related_article_id
""",
)

VIEWS: tuple[DerivedView, ...] = (ARTICLE_FACTS, RELATED_RESOLVED)

BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
DOCUMENT_TABLES: tuple[Table, ...] = tuple(t for t in TABLES if t.partitioned)


def table(name: str) -> Table:
    return BY_NAME[name]


def markdown_table_list() -> str:
    """The README's table list: name, grain and key of every table."""
    lines = ["| table | grain | key |", "|---|---|---|"]
    for t in TABLES:
        lines.append(f"| `{t.name}` | {t.grain} | {', '.join(t.key)} |")
    return "\n".join(lines)
