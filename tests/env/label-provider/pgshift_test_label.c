/*
 * A security label provider for the test servers, as PostgreSQL's own dummy_seclabel module is for
 * its regression tests: the test bed has no SELinux (sepgsql) and no PostgreSQL Anonymizer, so
 * without it no security label could exist on a test server. Loaded through
 * shared_preload_libraries on the source and target clusters (not on "apache", which therefore
 * stands for a target that lacks the provider). It accepts the labels "public", "internal" and
 * "secret" on any object, and NULL (remove the label).
 */
#include "postgres.h"

#include "commands/seclabel.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

void _PG_init(void);

static void
pgshift_test_label_check(const ObjectAddress *object, const char *seclabel)
{
	if (seclabel == NULL ||
		strcmp(seclabel, "public") == 0 ||
		strcmp(seclabel, "internal") == 0 ||
		strcmp(seclabel, "secret") == 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_NAME),
			 errmsg("'%s' is not a valid security label of pgshift_test", seclabel)));
}

void
_PG_init(void)
{
	register_label_provider("pgshift_test", pgshift_test_label_check);
}
