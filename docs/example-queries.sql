-- Example questions for analysts; each runs as it is with `pipeline query "..."`, in the DuckDB
-- CLI on warehouse/catalog.duckdb, or in a BI tool's SQL editor. tests/test_bi_clients.py runs
-- every block below (one statement per `-- name:` line) on the sample warehouse.

-- name: Articles per provider per month
-- Months are UTC (published_year_month); undated articles come last, with month NULL.
SELECT published_year_month AS month,
       coalesce(provider_name, '(no provider)') AS provider,
       count(*) AS articles
FROM article_facts
GROUP BY ALL
ORDER BY month NULLS LAST, articles DESC, provider;

-- name: Top topics
SELECT topic, count(*) AS articles
FROM article_topics
GROUP BY topic
ORDER BY articles DESC, topic
LIMIT 10;

-- name: Topic co-occurrence
-- Pairs of topics listed on the same article, each pair once (alphabetical order within the pair).
SELECT a.topic AS topic, b.topic AS other_topic, count(*) AS articles
FROM article_topics a
JOIN article_topics b ON b.article_id = a.article_id AND a.topic < b.topic
GROUP BY ALL
ORDER BY articles DESC, topic, other_topic
LIMIT 10;

-- name: Most related articles
-- Seeds that other seeds list most often as related entries.
SELECT related_article_id, target_title AS title, count(*) AS times_related,
       count(DISTINCT article_id) AS listed_by_articles
FROM related_resolved
WHERE target_is_seed
GROUP BY ALL
ORDER BY times_related DESC, title
LIMIT 10;

-- name: Image size distribution
-- Images of articles and of related entries, by width bucket.
WITH images AS (
    SELECT 'article' AS source, width FROM article_images
    UNION ALL
    SELECT 'related entry' AS source, width FROM related_article_images
)
SELECT CASE
           WHEN width IS NULL THEN '(unknown)'
           WHEN width < 640 THEN '< 640'
           WHEN width < 1024 THEN '640-1023'
           WHEN width < 1600 THEN '1024-1599'
           ELSE '>= 1600'
       END AS width_px,
       count(*) FILTER (WHERE source = 'article') AS article_images,
       count(*) FILTER (WHERE source = 'related entry') AS related_images,
       count(*) AS images
FROM images
GROUP BY width_px
ORDER BY min(coalesce(width, -1));
