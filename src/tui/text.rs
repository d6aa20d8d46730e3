//! Every word the console shows, in English and Korean. The runbook pgshift replaces was written by
//! Korean DBAs, so Korean is a first-class language: `--lang ko` or a Korean locale selects it.
//! Templates use `{n}`-style placeholders filled by [`fill`].

use crate::error::UserError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ko,
}

impl Lang {
    /// `--lang` when given (`en`, `ko`), else the locale (`LC_ALL`, `LC_MESSAGES`, `LANG`).
    pub fn detect(flag: Option<&str>) -> Result<Lang, UserError> {
        match flag.map(|f| f.trim().to_ascii_lowercase()) {
            Some(f) if f == "en" || f.starts_with("en_") || f.starts_with("en-") => Ok(Lang::En),
            Some(f) if f == "ko" || f.starts_with("ko_") || f.starts_with("ko-") => Ok(Lang::Ko),
            Some(other) => Err(UserError::new(format!("unknown language {other:?}"), "use --lang en or --lang ko")),
            None => {
                // the first variable that is set wins, as in setlocale(3)
                let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
                    .iter()
                    .filter_map(|v| std::env::var(v).ok())
                    .find(|v| !v.is_empty())
                    .unwrap_or_default();
                Ok(if locale.starts_with("ko") { Lang::Ko } else { Lang::En })
            }
        }
    }

    pub fn text(self) -> &'static Text {
        match self {
            Lang::En => &EN,
            Lang::Ko => &KO,
        }
    }
}

/// Replaces `{key}` placeholders.
pub fn fill(template: &str, values: &[(&str, &dyn std::fmt::Display)]) -> String {
    let mut s = template.to_string();
    for (k, v) in values {
        s = s.replace(&format!("{{{k}}}"), &v.to_string());
    }
    s
}

/// The plan view's values, as templates.
pub struct PlanValues {
    pub new_dir: &'static str,
    pub resumed_dir: &'static str,
    pub data: &'static str,
    pub verify: &'static str,
    pub verify_checksums: &'static str,
    pub no_hypertables: &'static str,
    pub hypertable: &'static str,
    pub compressed: &'static str,
    pub no_index: &'static str,
    pub allow: &'static str,
}

pub struct Text {
    pub app: &'static str,
    pub view_stages: &'static str,
    pub view_verify: &'static str,
    pub view_plan: &'static str,
    pub checklist: &'static str,
    pub output: &'static str,
    pub following: &'static str,
    pub scrolled: &'static str,
    pub no_output: &'static str,
    pub dropped_lines: &'static str,
    pub progress: &'static str,
    pub no_progress: &'static str,
    /// A session's wait: {seconds}, {wait} (the server's wait event), {held} (`held_by` or
    /// nothing), {server} (source or target), {pid}, {statement}.
    pub wait_line: &'static str,
    /// The session holding what another waits for: {holder}.
    pub held_by: &'static str,
    /// The progress pane's title beside "Progress": {n} server sessions running a statement.
    pub busy_sessions: &'static str,
    /// A gauge that has not moved for `--stall-after` seconds.
    pub no_progress_for: &'static str,
    pub eta: &'static str,
    pub log: &'static str,
    pub status_pending: &'static str,
    pub status_running: &'static str,
    pub status_done: &'static str,
    pub status_failed: &'static str,
    pub status_cancelled: &'static str,
    pub status_skipped: &'static str,
    pub error: &'static str,
    pub fix: &'static str,
    pub live_off: &'static str,
    pub live_every: &'static str,
    pub busy: &'static str,
    pub idle: &'static str,
    pub search_prompt: &'static str,
    pub search_none: &'static str,
    pub search_hit: &'static str,
    // verification view
    pub verify_none: &'static str,
    pub verify_clean: &'static str,
    pub verify_unclean: &'static str,
    pub verify_at: &'static str,
    pub verify_changes: &'static str,
    pub verify_no_changes: &'static str,
    pub verify_earlier: &'static str,
    pub verify_failed_now: &'static str,
    pub verify_running_now: &'static str,
    pub on: &'static str,
    pub off: &'static str,
    /// Row statuses: same, count, content, missing, extra, unreadable.
    pub row_status: [&'static str; 6],
    /// Name changes: missing, extra, changed.
    pub change: [&'static str; 3],
    pub col_class: &'static str,
    pub col_source: &'static str,
    pub col_target: &'static str,
    pub col_difference: &'static str,
    pub col_table: &'static str,
    pub col_rows: &'static str,
    pub col_checksum: &'static str,
    pub col_status: &'static str,
    pub col_change: &'static str,
    pub col_name: &'static str,
    pub table_rows: &'static str,
    pub details: &'static str,
    pub details_none: &'static str,
    pub planned: &'static str,
    // plan view
    pub plan: &'static str,
    /// The plan view's rows: source, target, run directory (new / resumed), data, verify (with
    /// checksums), hypertables (none), hypertable, vector, planned differences.
    pub plan_rows: [&'static str; 9],
    /// The plan view's line naming what the move upgrades (found by the pre-flight).
    pub plan_upgrades: &'static str,
    /// The plan view's timeline heading: {wall} and {beside} (time stages ran beside another).
    pub plan_timeline: &'static str,
    pub plan_values: PlanValues,
    /// Progress units: rows, tables, steps, seconds.
    pub units: [&'static str; 4],
    // dialogs and messages
    pub confirm_title: &'static str,
    pub confirm_keys: &'static str,
    pub confirm_run_all: &'static str,
    pub confirm_run_stage: &'static str,
    pub confirm_retry: &'static str,
    pub confirm_skip: &'static str,
    pub confirm_cutover: &'static str,
    pub lag_line: &'static str,
    pub msg_no_catch_up: &'static str,
    pub confirm_cancel: &'static str,
    pub confirm_quit_running: &'static str,
    pub msg_preflight_ok: &'static str,
    pub msg_busy: &'static str,
    pub msg_not_running: &'static str,
    pub msg_already_done: &'static str,
    pub msg_before_first: &'static str,
    pub msg_not_failed: &'static str,
    pub msg_live_on: &'static str,
    pub msg_live_off: &'static str,
    pub msg_cancelling: &'static str,
    pub msg_started: &'static str,
    pub msg_finished: &'static str,
    pub msg_warning: &'static str,
    pub msg_verified: &'static str,
    pub help_title: &'static str,
    pub help_footer: &'static str,
    /// Short names of the checklist's stages, by stage id.
    pub stage_names: &'static [(&'static str, &'static str)],
    /// The key bar's one-word names, by action name.
    pub bar: &'static [(&'static str, &'static str)],
    /// One line per action, by action name (`run-all`, ...).
    pub actions: &'static [(&'static str, &'static str)],
}

impl Text {
    pub fn stage_name<'a>(&self, id: &'a str) -> &'a str {
        self.stage_names.iter().find(|(k, _)| *k == id).map(|(_, v)| *v).unwrap_or(id)
    }

    pub fn bar_label(&self, name: &str) -> &'static str {
        self.bar.iter().find(|(k, _)| *k == name).map(|(_, v)| *v).unwrap_or("")
    }

    pub fn action(&self, name: &str) -> &'static str {
        self.actions.iter().find(|(k, _)| *k == name).map(|(_, v)| *v).unwrap_or("")
    }
}

pub static EN: Text = Text {
    app: "pgshift",
    view_stages: "Stages",
    view_verify: "Verify",
    view_plan: "Plan",
    checklist: "Checklist",
    output: "Output",
    following: "following",
    scrolled: "scrolled",
    no_output: "no output yet",
    dropped_lines: "… {n} earlier lines dropped (the run's pgshift.log keeps them all)",
    progress: "Progress",
    no_progress: "nothing in progress",
    wait_line: "waiting {seconds} s · {wait}{held} · {server} pid {pid}: {statement}",
    held_by: ", held by {holder}",
    busy_sessions: "{n} server session(s) busy",
    no_progress_for: "no progress for {n} s",
    eta: "ETA",
    log: "Log",
    status_pending: "pending",
    status_running: "running",
    status_done: "done",
    status_failed: "failed",
    status_cancelled: "cancelled",
    status_skipped: "skipped",
    error: "error",
    fix: "fix",
    live_off: "live verify off",
    live_every: "live verify every {n}s",
    busy: "running",
    idle: "idle",
    search_prompt: "search: ",
    search_none: "no line matches {q}",
    search_hit: "match {i} of {n}",
    verify_none: "No verification yet. Press {key} to verify now.",
    verify_clean: "CLEAN: no differences beyond {planned} planned",
    verify_unclean: "{n} UNEXPECTED DIFFERENCE(S), {planned} planned",
    verify_at: "verified at {at} (run {run}), checksums {checksums}",
    verify_changes: "since the previous verify: {new} new, {gone} resolved",
    verify_no_changes: "since the previous verify: no change",
    verify_earlier: "from an earlier session, written {at}",
    verify_failed_now: "the last verify could not compare: {error} (fix: {fix})",
    verify_running_now: "verifying now…",
    on: "on",
    off: "off",
    row_status: ["same", "count", "content", "missing", "extra", "unreadable"],
    change: ["missing", "extra", "changed"],
    col_class: "object class",
    col_source: "source",
    col_target: "target",
    col_difference: "difference",
    col_table: "table",
    col_rows: "rows",
    col_checksum: "checksum",
    col_status: "status",
    col_change: "change",
    col_name: "name",
    table_rows: "table rows",
    details: "Details",
    details_none: "no differences in this class",
    planned: "planned",
    plan: "Plan",
    plan_upgrades: "upgrades",
    plan_timeline: "timeline: {wall} wall, {beside} of it beside another stage",
    plan_rows: [
        "source",
        "target",
        "run directory",
        "data",
        "verify",
        "hypertables",
        "hypertable",
        "vector",
        "planned differences",
    ],
    plan_values: PlanValues {
        new_dir: "{dir} (new)",
        resumed_dir: "{dir} (resumed)",
        data: "{n} parallel connection(s), binary COPY, resumable pieces",
        verify: "objects, definitions, rows",
        verify_checksums: "objects, definitions, rows and checksums",
        no_hypertables: "source hypertables recreated; no plain table converted",
        hypertable: "{table} by {column}",
        compressed: ", compressed",
        no_index: "no index",
        allow: "{n} [[allow]] entries",
    },
    units: ["rows", "tables", "steps", "s"],
    confirm_title: "Confirm",
    confirm_keys: "y: yes   n / Esc: no",
    confirm_run_all: "Run every remaining stage? This writes to the target {target}.",
    confirm_run_stage: "Run stage {stage}? It may write to the target {target}.",
    confirm_retry: "Retry stage {stage}?",
    confirm_skip: "Skip stage {stage}? The final verify will show what it would have done.",
    confirm_cutover: "Cut over now? The application must have stopped writing to the source: the catch-up drains to the source's current position, then the cutover and verify run.",
    msg_no_catch_up: "no catch-up is running: the cutover key ends an online migration's catch-up",
    lag_line: "lag {seconds} s · {bytes}",
    confirm_cancel:
        "Cancel the running stage? Child processes and server sessions are stopped; run it again to resume.",
    confirm_quit_running: "A stage is running. Cancel it and quit?",
    msg_preflight_ok: "pre-flight checks passed, nothing written yet: {key} runs every stage",
    msg_busy: "a stage is running; wait for it or cancel it ({key})",
    msg_not_running: "nothing is running",
    msg_already_done: "{stage} is already done",
    msg_before_first: "run the stages before {stage} first ({key}: run all)",
    msg_not_failed: "{stage} has not failed; nothing to retry",
    msg_live_on: "live verify on: every {n}s while idle",
    msg_live_off: "live verify off",
    msg_cancelling: "cancelling: stopping child processes and ending server sessions",
    msg_started: "{stage} started",
    msg_finished: "{stage} {status}",
    msg_warning: "{stage} warning: {message}",
    msg_verified: "verify: {n} unexpected difference(s)",
    help_title: "Keys",
    help_footer: "Keys come from ~/.config/pgshift/keys.toml or --keys FILE (defaults: assets/keys.toml).",
    stage_names: &[
        ("backup", "Backup"),
        ("environment", "Environment"),
        ("schema", "Schema"),
        ("data", "Data"),
        ("post-data", "Post-data"),
        ("timescaledb", "TimescaleDB"),
        ("pgvector", "pgvector"),
        ("tuning", "Tuning"),
        ("catch-up", "Catch-up"),
        ("cutover", "Cutover"),
        ("verify", "Verify"),
    ],
    bar: &[
        ("run-all", "run all"),
        ("run-selected", "run"),
        ("retry", "retry"),
        ("skip", "skip"),
        ("cancel", "cancel"),
        ("verify-now", "verify"),
        ("cutover", "cut over"),
        ("live-verify", "live"),
        ("search", "search"),
        ("next-view", "view"),
        ("help", "help"),
        ("quit", "quit"),
    ],
    actions: &[
        ("up", "move up"),
        ("down", "move down"),
        ("page-up", "scroll up a page"),
        ("page-down", "scroll down a page"),
        ("top", "go to the top"),
        ("bottom", "go to the end and follow"),
        ("run-selected", "run the selected stage"),
        ("run-all", "run every remaining stage"),
        ("retry", "retry the selected failed stage"),
        ("skip", "skip the selected stage"),
        ("cancel", "cancel the running stage"),
        ("verify-now", "verify source against target now"),
        ("cutover", "online: the application stopped writing, cut over now"),
        ("live-verify", "turn live verification on or off"),
        ("next-view", "next view (stages, verify, plan)"),
        ("view-stages", "stages view"),
        ("view-verify", "verification view"),
        ("view-plan", "plan view"),
        ("search", "search the output"),
        ("next-match", "next match"),
        ("previous-match", "previous match"),
        ("follow", "follow the output"),
        ("help", "show or hide this help"),
        ("quit", "quit (asks while a stage runs)"),
        ("interrupt", "cancel what runs and quit at once"),
    ],
};

pub static KO: Text = Text {
    app: "pgshift",
    view_stages: "단계",
    view_verify: "검증",
    view_plan: "계획",
    checklist: "체크리스트",
    output: "출력",
    following: "따라가기",
    scrolled: "스크롤됨",
    no_output: "아직 출력 없음",
    dropped_lines: "… 이전 {n}줄 생략 (전체는 실행 디렉터리의 pgshift.log에 있음)",
    progress: "진행률",
    no_progress: "진행 중인 작업 없음",
    wait_line: "{seconds}초째 대기 중 · {wait}{held} · {server} pid {pid}: {statement}",
    held_by: ", 잡고 있는 세션: {holder}",
    busy_sessions: "서버 세션 {n}개 작업 중",
    no_progress_for: "{n}초째 진행 없음",
    eta: "남은 시간",
    log: "로그",
    status_pending: "대기",
    status_running: "실행 중",
    status_done: "완료",
    status_failed: "실패",
    status_cancelled: "취소됨",
    status_skipped: "건너뜀",
    error: "오류",
    fix: "해결",
    live_off: "실시간 검증 꺼짐",
    live_every: "실시간 검증 {n}초마다",
    busy: "실행 중",
    idle: "대기 중",
    search_prompt: "검색: ",
    search_none: "{q}와 일치하는 줄 없음",
    search_hit: "{n}개 중 {i}번째",
    verify_none: "아직 검증하지 않았습니다. {key} 키로 지금 검증하세요.",
    verify_clean: "이상 없음: 계획된 {planned}건 외 차이 없음",
    verify_unclean: "예상하지 못한 차이 {n}건, 계획된 차이 {planned}건",
    verify_at: "{at}에 검증 ({run}회차), 체크섬 {checksums}",
    verify_changes: "직전 검증 대비: 새 차이 {new}건, 해소 {gone}건",
    verify_no_changes: "직전 검증 대비: 변화 없음",
    verify_earlier: "이전 세션의 결과, {at}에 기록됨",
    verify_failed_now: "마지막 검증은 비교하지 못했습니다: {error} (해결: {fix})",
    verify_running_now: "지금 검증 중…",
    on: "켬",
    off: "끔",
    row_status: ["같음", "행 수", "내용", "없음", "추가", "읽기 불가"],
    change: ["없음", "추가", "변경"],
    col_class: "객체 종류",
    col_source: "원본",
    col_target: "대상",
    col_difference: "차이",
    col_table: "테이블",
    col_rows: "행 수",
    col_checksum: "체크섬",
    col_status: "상태",
    col_change: "변경",
    col_name: "이름",
    table_rows: "테이블 행",
    details: "상세",
    details_none: "이 종류에는 차이가 없습니다",
    planned: "계획됨",
    plan: "계획",
    plan_upgrades: "업그레이드",
    plan_timeline: "타임라인: 전체 {wall}, 그중 {beside}는 다른 단계와 동시에 실행",
    plan_rows: [
        "원본",
        "대상",
        "실행 디렉터리",
        "데이터",
        "검증",
        "하이퍼테이블",
        "하이퍼테이블",
        "벡터",
        "계획된 차이",
    ],
    plan_values: PlanValues {
        new_dir: "{dir} (새 실행)",
        resumed_dir: "{dir} (이어서 실행)",
        data: "병렬 연결 {n}개, 바이너리 COPY, 조각 단위 재개",
        verify: "객체, 정의, 행 수",
        verify_checksums: "객체, 정의, 행 수와 체크섬",
        no_hypertables: "원본 하이퍼테이블은 다시 만듦; 변환할 일반 테이블 없음",
        hypertable: "{table} ({column} 기준)",
        compressed: ", 압축",
        no_index: "인덱스 없음",
        allow: "[[allow]] 항목 {n}개",
    },
    units: ["행", "테이블", "단계", "초"],
    confirm_title: "확인",
    confirm_keys: "y: 예   n / Esc: 아니요",
    confirm_run_all: "남은 단계를 모두 실행할까요? 대상 {target}에 씁니다.",
    confirm_run_stage: "{stage} 단계를 실행할까요? 대상 {target}에 쓸 수 있습니다.",
    confirm_retry: "{stage} 단계를 다시 시도할까요?",
    confirm_skip: "{stage} 단계를 건너뛸까요? 최종 검증에서 차이가 보일 수 있습니다.",
    confirm_cutover: "지금 전환할까요? 애플리케이션이 원본에 쓰기를 멈췄어야 합니다: 따라잡기가 원본의 현재 위치까지 적용한 뒤 전환과 검증이 실행됩니다.",
    msg_no_catch_up: "실행 중인 따라잡기가 없습니다: 전환 키는 온라인 마이그레이션의 따라잡기를 끝냅니다",
    lag_line: "지연 {seconds}초 · {bytes}",
    confirm_cancel:
        "실행 중인 단계를 취소할까요? 자식 프로세스와 서버 세션을 멈춥니다. 다시 실행하면 이어서 진행합니다.",
    confirm_quit_running: "단계가 실행 중입니다. 취소하고 종료할까요?",
    msg_preflight_ok: "사전 점검 통과, 아직 아무것도 쓰지 않음: {key} 키로 모든 단계 실행",
    msg_busy: "단계가 실행 중입니다. 끝날 때까지 기다리거나 취소({key})하세요",
    msg_not_running: "실행 중인 단계가 없습니다",
    msg_already_done: "{stage} 단계는 이미 완료되었습니다",
    msg_before_first: "{stage} 이전 단계를 먼저 실행하세요 ({key}: 모두 실행)",
    msg_not_failed: "{stage} 단계는 실패하지 않았습니다. 다시 시도할 것이 없습니다",
    msg_live_on: "실시간 검증 켜짐: 대기 중 {n}초마다",
    msg_live_off: "실시간 검증 꺼짐",
    msg_cancelling: "취소 중: 자식 프로세스를 멈추고 서버 세션을 종료합니다",
    msg_started: "{stage} 시작",
    msg_finished: "{stage} {status}",
    msg_warning: "{stage} 경고: {message}",
    msg_verified: "검증: 예상하지 못한 차이 {n}건",
    help_title: "키",
    help_footer: "키 설정: ~/.config/pgshift/keys.toml 또는 --keys FILE (기본값: assets/keys.toml).",
    stage_names: &[
        ("backup", "백업"),
        ("environment", "환경"),
        ("schema", "스키마"),
        ("data", "데이터"),
        ("post-data", "후처리"),
        ("timescaledb", "TimescaleDB"),
        ("pgvector", "pgvector"),
        ("tuning", "튜닝"),
        ("catch-up", "따라잡기"),
        ("cutover", "전환"),
        ("verify", "검증"),
    ],
    bar: &[
        ("run-all", "모두 실행"),
        ("run-selected", "실행"),
        ("retry", "재시도"),
        ("skip", "건너뛰기"),
        ("cancel", "취소"),
        ("verify-now", "검증"),
        ("cutover", "전환"),
        ("live-verify", "실시간"),
        ("search", "검색"),
        ("next-view", "화면"),
        ("help", "도움말"),
        ("quit", "종료"),
    ],
    actions: &[
        ("up", "위로 이동"),
        ("down", "아래로 이동"),
        ("page-up", "한 페이지 위로"),
        ("page-down", "한 페이지 아래로"),
        ("top", "맨 위로"),
        ("bottom", "맨 끝으로 (따라가기)"),
        ("run-selected", "선택한 단계 실행"),
        ("run-all", "남은 단계 모두 실행"),
        ("retry", "실패한 단계 다시 시도"),
        ("skip", "선택한 단계 건너뛰기"),
        ("cancel", "실행 중인 단계 취소"),
        ("verify-now", "지금 원본과 대상 검증"),
        ("cutover", "온라인: 애플리케이션이 쓰기를 멈춤, 지금 전환"),
        ("live-verify", "실시간 검증 켜기/끄기"),
        ("next-view", "다음 화면 (단계, 검증, 계획)"),
        ("view-stages", "단계 화면"),
        ("view-verify", "검증 화면"),
        ("view-plan", "계획 화면"),
        ("search", "출력 검색"),
        ("next-match", "다음 일치"),
        ("previous-match", "이전 일치"),
        ("follow", "출력 따라가기"),
        ("help", "도움말 보기/숨기기"),
        ("quit", "종료 (단계 실행 중이면 확인)"),
        ("interrupt", "실행 중인 작업을 취소하고 바로 종료"),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_name_every_stage_and_action_the_same_way() {
        let keys = |t: &Text| t.stage_names.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(keys(&EN), keys(&KO));
        let actions = |t: &Text| t.actions.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(actions(&EN), actions(&KO));
        let bar = |t: &Text| t.bar.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(bar(&EN), bar(&KO));
    }

    #[test]
    fn flag_wins_and_unknown_language_is_one_error() {
        assert_eq!(Lang::detect(Some("ko")).unwrap(), Lang::Ko);
        assert_eq!(Lang::detect(Some("en")).unwrap(), Lang::En);
        assert_eq!(Lang::detect(Some("ko_KR.UTF-8")).unwrap(), Lang::Ko);
        let e = Lang::detect(Some("fr")).unwrap_err();
        assert!(e.fix.contains("--lang ko"));
        assert_eq!(fill("{a} and {b}", &[("a", &1), ("b", &"x")]), "1 and x");
    }
}
