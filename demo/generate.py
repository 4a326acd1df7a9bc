#!/usr/bin/env python3
"""Generates demo/events.jsonl: one day (2026-11-24 UTC) of SaaS audit activity for a 25-person company, with an
account-takeover story interleaved. Deterministic (fixed seed): running it again gives the same file.

    python3 demo/generate.py            # writes demo/events.jsonl next to this script

Each output line is `{"source": "<perimeter source>", "event": {<raw vendor event>}}`, sorted by event time.
The story and its timeline are described in demo/README.md.
"""
import datetime as dt
import hashlib
import json
import os
import random

SEED = 20261124
DAY = dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc)
DOMAIN = 'acme-corp.example'
ORG = 'acme-corp'
ACCOUNT = '314159265358'
rng = random.Random(SEED)

# name, role, home IP (company office egress is 198.51.100.10)
PEOPLE = [
    ('dana.kim', 'eng-lead'), ('sam.ortiz', 'eng'), ('lee.wong', 'eng'), ('ana.silva', 'eng'), ('tom.becker', 'eng'),
    ('priya.nair', 'eng'), ('jonas.weber', 'eng'), ('mia.novak', 'eng'), ('omar.haddad', 'eng'), ('lucas.moreau', 'eng'),
    ('eva.lind', 'platform'), ('raj.patel', 'platform'), ('nina.rossi', 'it-admin'), ('ben.clarke', 'sales'),
    ('chloe.martin', 'sales'), ('david.cohen', 'sales'), ('emma.schulz', 'finance'), ('felix.braun', 'finance'),
    ('grace.lee', 'finance'), ('hana.sato', 'marketing'), ('ivan.petrov', 'marketing'), ('julia.costa', 'support'),
    ('kai.jensen', 'support'), ('laura.fischer', 'people'), ('max.muller', 'ceo'),
]
EMAIL = {n: f'{n}@{DOMAIN}' for n, _ in PEOPLE}
ROLE = dict(PEOPLE)
ENGINEERS = [n for n, r in PEOPLE if r in ('eng', 'eng-lead', 'platform')]
OFFICE_IP = '198.51.100.10'
HOME_IP = {n: f'192.0.2.{10 + i}' for i, (n, _) in enumerate(PEOPLE)}
GH_LOGIN = {n: n.replace('.', '-') for n in ENGINEERS}
REPOS = ['acme-corp/payments-api', 'acme-corp/web-app', 'acme-corp/infra', 'acme-corp/mobile', 'acme-corp/data-pipeline']
OKTA_APPS = ['Google Workspace', 'Slack', 'GitHub Enterprise Cloud', 'AWS IAM Identity Center', 'Zoom', '1Password', 'Microsoft Office 365']

ATTACKER_IP = '203.0.113.66'
VICTIM = 'dana.kim'
UA_CHROME = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
UA_ATTACK = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'

OUT = []


def h(*parts):
    return hashlib.sha1('|'.join(map(str, parts)).encode()).hexdigest()


def at(hh, mm=0, ss=0, ms=0):
    return DAY + dt.timedelta(hours=hh, minutes=mm, seconds=ss, milliseconds=ms)


def work_time(start=7, end=19):
    return DAY + dt.timedelta(seconds=rng.randint(start * 3600, end * 3600 - 1), milliseconds=rng.randint(0, 999))


def iso_ms(t):
    return t.strftime('%Y-%m-%dT%H:%M:%S.') + f'{t.microsecond // 1000:03d}Z'


def emit(source, t, event):
    OUT.append((t, len(OUT), source, event))


# ------------------------------------------------------------------------------------------------------------ okta --
def okta(t, event_type, user, result='SUCCESS', ip=None, reason=None, target=None, ua=UA_CHROME, debug=None, actor_type='User', display=None):
    ip = ip or OFFICE_IP
    alt = EMAIL.get(user, user)
    emit('okta', t, {
        'uuid': h('okta', event_type, alt, t.isoformat())[:8] + '-' + h(t)[:4] + '-11ef-' + h(alt)[:4] + '-' + h(event_type, t)[:12],
        'published': iso_ms(t), 'eventType': event_type, 'version': '0',
        'severity': 'INFO' if result in ('SUCCESS', 'ALLOW') else 'WARN',
        'legacyEventType': None, 'displayMessage': display or event_type,
        'actor': {'id': '00u' + h(alt)[:17], 'type': actor_type, 'alternateId': alt, 'displayName': user.replace('.', ' ').title(), 'detailEntry': None},
        'client': {'userAgent': {'rawUserAgent': ua, 'os': 'Windows 10' if ua == UA_ATTACK else 'Mac OS X', 'browser': 'CHROME'},
                   'zone': 'null', 'device': 'Computer', 'id': None, 'ipAddress': ip,
                   'geographicalContext': {'city': 'Amsterdam', 'state': 'North Holland', 'country': 'Netherlands', 'postalCode': '1012', 'geolocation': {'lat': 52.37, 'lon': 4.89}}
                   if ip == ATTACKER_IP else {'city': 'Berlin', 'state': 'Land Berlin', 'country': 'Germany', 'postalCode': '10115', 'geolocation': {'lat': 52.52, 'lon': 13.40}}},
        'device': None,
        'authenticationContext': {'authenticationProvider': None, 'credentialProvider': None, 'credentialType': None, 'issuer': None,
                                  'interface': None, 'authenticationStep': 0, 'externalSessionId': h('sess', alt, t.hour // 8)[:25]},
        'outcome': {'result': result, 'reason': reason},
        'securityContext': {'asNumber': 64500, 'asOrg': 'example transit', 'isp': 'example isp', 'domain': 'example', 'isProxy': ip == ATTACKER_IP},
        'debugContext': {'debugData': debug or default_debug(t, event_type, result, ip)},
        'transaction': {'type': 'WEB', 'id': h('tx', t, alt)[:22], 'detail': {}},
        'target': target or [],
        'request': {'ipChain': [{'ip': ip, 'version': 'V4', 'source': None}]},
    })


def default_debug(t, event_type, result, ip):
    debug = {'requestId': h('req', t)[:22], 'requestUri': '/idp/idx/identify', 'url': '/idp/idx/identify?'}
    if event_type == 'user.session.start' and result == 'SUCCESS':
        new = 'POSITIVE' if ip == ATTACKER_IP else 'NEGATIVE'
        debug['behaviors'] = (f'{{New Geo-Location={new}, New Device={new}, New IP={new}, New State={new}, '
                              f'New Country={new}, Velocity={new}, New City={new}}}')
    return debug


def okta_target(alt, ttype='User', display=None):
    return {'id': '0oa' + h(alt)[:17], 'type': ttype, 'alternateId': alt, 'displayName': display or alt, 'detailEntry': None}


def okta_day():
    for user, role in PEOPLE:
        ip = OFFICE_IP if rng.random() < 0.6 else HOME_IP[user]
        start = work_time(7, 10)
        if rng.random() < 0.15:  # a mistyped password now and then
            for k in range(rng.randint(1, 2)):
                okta(start - dt.timedelta(seconds=40 - k * 15), 'user.session.start', user, 'FAILURE', ip, 'INVALID_CREDENTIALS', display='User login to Okta')
        okta(start, 'user.session.start', user, ip=ip, display='User login to Okta')
        okta(start + dt.timedelta(seconds=2), 'policy.evaluate_sign_on', user, 'ALLOW', ip, 'Sign-on policy evaluation resulted in CHALLENGE')
        okta(start + dt.timedelta(seconds=9), 'user.authentication.auth_via_mfa', user, ip=ip, display='Authentication of user via MFA',
             target=[okta_target('Okta Verify', 'AuthenticatorEnrollment')])
        apps = rng.sample(OKTA_APPS, rng.randint(3, 6))
        for app in apps:
            okta(start + dt.timedelta(minutes=rng.randint(1, 300), seconds=rng.randint(0, 59)), 'user.authentication.sso', user, ip=ip,
                 display='User single sign on to app', target=[okta_target(app.lower().replace(' ', '_'), 'AppInstance', app)])
        if rng.random() < 0.5:  # second session after lunch
            t2 = start + dt.timedelta(hours=rng.randint(4, 6), minutes=rng.randint(0, 59))
            okta(t2, 'user.session.start', user, ip=ip, display='User login to Okta')
            okta(t2 + dt.timedelta(seconds=7), 'user.authentication.auth_via_mfa', user, ip=ip)
        okta(work_time(17, 20), 'user.session.end', user, ip=ip, display='User logout from Okta')
    # IT admin housekeeping: onboarding a new hire tomorrow
    t = at(11, 12, 5)
    okta(t, 'user.lifecycle.create', 'nina.rossi', target=[okta_target('new.hire@' + DOMAIN)], display='Create okta user')
    okta(t + dt.timedelta(seconds=20), 'group.user_membership.add', 'nina.rossi', target=[okta_target('new.hire@' + DOMAIN), okta_target('Engineering', 'UserGroup')])
    okta(t + dt.timedelta(seconds=35), 'application.user_membership.add', 'nina.rossi', target=[okta_target('new.hire@' + DOMAIN), okta_target('slack', 'AppInstance', 'Slack')])


# ---------------------------------------------------------------------------------------------------------- github --
def github(t, action, actor, **extra):
    ms = int(t.timestamp() * 1000)
    ev = {'@timestamp': ms, 'created_at': ms, 'action': action, 'actor': actor, 'actor_id': int(h(actor)[:7], 16),
          'actor_location': {'country_code': 'NL' if actor == 'dk-backup-7' else 'DE'}, 'org': ORG, 'org_id': 90210017,
          'business': 'acme', 'user_agent': 'git/2.47.1' if action.startswith('git.') else UA_CHROME,
          '_document_id': h('gh', action, ms, actor)[:22], 'operation_type': 'create' if action.endswith('create') else 'modify'}
    ev.update(extra)
    emit('github', t, ev)


def github_day():
    for user in ENGINEERS:
        login = GH_LOGIN[user]
        for _ in range(rng.randint(3, 8)):
            t = work_time(8, 19)
            repo = rng.choice(REPOS)
            github(t, 'git.push', login, repo=repo, repository_public=False, transport_protocol_name='ssh', transport_protocol=2)
            if rng.random() < 0.5:
                github(t + dt.timedelta(minutes=rng.randint(1, 20)), 'pull_request.create', login, repo=repo, pull_request_id=rng.randint(100000, 999999))
        for _ in range(rng.randint(1, 4)):
            t = work_time(8, 19)
            repo = rng.choice(REPOS)
            github(t, 'pull_request_review.submit', login, repo=repo, review_id=rng.randint(10 ** 8, 10 ** 9))
            github(t + dt.timedelta(minutes=rng.randint(2, 40)), 'pull_request.merge', login, repo=repo, pull_request_id=rng.randint(100000, 999999))
            # CI runs on merge; the deploy assumes the AWS CI role (see aws_day)
            run = rng.randint(10 ** 9, 10 ** 10)
            for job in ('build', 'test', 'deploy'):
                github(t + dt.timedelta(minutes=3), 'workflows.prepared_workflow_job', 'github-actions[bot]', repo=repo, job_name=job,
                       workflow_run_id=run, is_hosted_runner=True, runner_labels=['ubuntu-latest'], secrets_passed=['AWS_ROLE_ARN', 'SLACK_WEBHOOK_URL'])
            github(t + dt.timedelta(minutes=11), 'workflows.completed_workflow_run', 'github-actions[bot]', repo=repo, workflow_run_id=run,
                   conclusion='success', event='push', head_branch='main')
        if rng.random() < 0.4:
            github(work_time(9, 18), 'git.clone', login, repo=rng.choice(REPOS), repository_public=False, transport_protocol_name='ssh')
    github(at(10, 31, 12), 'team.add_member', 'nina-rossi', team='acme-corp/engineering', user='new-hire-acme')
    github(at(15, 44, 40), 'repo.create', 'eva-lind', repo='acme-corp/terraform-modules', visibility='private')
    # A developer wires CI notifications to Slack; the webhook config carries a signing secret (masking demo).
    github(at(11, 47, 3), 'hook.create', 'sam-ortiz', repo='acme-corp/web-app', hook_id=4879321, name='webhook', events=['push', 'pull_request'],
           active=True, config={'url': 'https://hooks.slack.com/services/T0ACME01/B07QWERTY/abcDEFghiJKLmnoPQRstuVWX', 'content_type': 'json',
                                'insecure_ssl': '0', 'secret': 'whsec_7d1f0c2b9a8e4f6d3c5b1a0e9f8d7c6b'})


# ---------------------------------------------------------------------------------------------- google workspace --
def gws(t, app, name, user, params=(), etype=None, ip=None):
    ps = []
    for k, v in params:
        if isinstance(v, list):
            ps.append({'name': k, 'multiValue': v})
        elif isinstance(v, bool):
            ps.append({'name': k, 'boolValue': v})
        else:
            ps.append({'name': k, 'value': v})
    email = EMAIL.get(user, user)
    emit('google_workspace', t, {
        'kind': 'admin#reports#activity',
        'id': {'time': iso_ms(t), 'uniqueQualifier': str(-int(h('gq', app, name, t, email)[:15], 16)), 'applicationName': app, 'customerId': 'C03acme01'},
        'etag': '"' + h('etag', t, name, email)[:40] + '"',
        'actor': {'callerType': 'USER', 'email': email, 'profileId': str(100000000000000000000 + int(h(email)[:16], 16) % 10 ** 20)},
        'ipAddress': ip or OFFICE_IP,
        'events': [{'type': etype or 'access', 'name': name, 'parameters': ps}],
    })


DOC_TITLES = ['Q4 planning', 'Roadmap 2027', 'Team offsite', 'Sales pipeline', 'Hiring plan', 'Board deck', 'Incident postmortem',
              'Customer onboarding', 'Pricing model', 'OKRs', 'Security review', 'Release notes', 'Design doc', 'Budget 2027']


def gws_day():
    for user, role in PEOPLE:
        ip = OFFICE_IP if rng.random() < 0.6 else HOME_IP[user]
        gws(work_time(7, 10), 'login', 'login_success', user, [('login_type', 'saml'), ('is_suspicious', False)], 'login', ip)
        for _ in range(rng.randint(12, 30)):
            t = work_time(8, 19)
            doc = rng.randrange(len(DOC_TITLES) * 20)
            name = rng.choices(['view', 'edit', 'download', 'create'], [70, 25, 4, 1])[0]
            gws(t, 'drive', name, user, [('primary_event', True), ('billable', True), ('owner_is_shared_drive', False),
                                         ('owner', EMAIL[PEOPLE[doc % len(PEOPLE)][0]]), ('doc_id', '1' + h('doc', doc)[:32]),
                                         ('doc_type', rng.choice(['document', 'spreadsheet', 'presentation'])),
                                         ('doc_title', DOC_TITLES[doc % len(DOC_TITLES)]), ('visibility', 'shared_internally')], 'access', ip)
        if rng.random() < 0.2:
            gws(work_time(9, 17), 'token', 'authorize', user, [('client_id', '77377267392.apps.googleusercontent.com'), ('app_name', 'Zoom for Google Calendar'),
                                                              ('client_type', 'WEB'), ('scope', ['openid', 'https://www.googleapis.com/auth/calendar.readonly',
                                                                                                 'https://www.googleapis.com/auth/userinfo.email'])], 'auth', ip)
    gws(at(11, 14, 2), 'admin', 'CREATE_USER', 'nina.rossi', [('USER_EMAIL', 'new.hire@' + DOMAIN)], 'USER_SETTINGS')
    gws(at(11, 15, 30), 'admin', 'ADD_GROUP_MEMBER', 'nina.rossi', [('USER_EMAIL', 'new.hire@' + DOMAIN), ('GROUP_EMAIL', 'engineering@' + DOMAIN)], 'GROUP_SETTINGS')


# ----------------------------------------------------------------------------------------------------------- slack --
def slack(t, action, user, ip=None, entity=None, details=None, ua='Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.41.105 Chrome/130.0 Safari/537.36'):
    email = EMAIL.get(user, user)
    ev = {'id': h('slack', action, t, email)[:8] + '-' + h(t)[:4] + '-4' + h(email)[:3] + '-8' + h(action)[:3] + '-' + h(action, t, email)[:12],
          'date_create': int(t.timestamp()), 'action': action,
          'actor': {'type': 'user', 'user': {'id': 'U0' + h(email)[:9].upper(), 'name': user.replace('.', ' ').title(), 'email': email}},
          'entity': entity or {'type': 'workspace', 'workspace': {'id': 'T0ACME01', 'name': 'Acme Corp', 'domain': 'acme-corp'}},
          'context': {'location': {'type': 'workspace', 'id': 'T0ACME01', 'name': 'Acme Corp', 'domain': 'acme-corp'}, 'ua': ua,
                      'ip_address': ip or OFFICE_IP, 'session_id': int(h('ss', email)[:9], 16)}}
    if details is not None:
        ev['details'] = details
    emit('slack', t, ev)


def slack_day():
    channels = ['general', 'engineering', 'incidents', 'sales', 'random', 'deploys']
    for user, role in PEOPLE:
        ip = OFFICE_IP if rng.random() < 0.6 else HOME_IP[user]
        slack(work_time(7, 10), 'user_login', user, ip)
        for _ in range(rng.randint(0, 3)):
            slack(work_time(9, 18), 'file_downloaded', user, ip, entity={'type': 'file', 'file': {'id': 'F0' + h(rng.random())[:9].upper(),
                                                                                               'name': rng.choice(['screenshot.png', 'notes.pdf', 'logs.txt', 'diagram.png']), 'filetype': 'png', 'title': 'shared file'}})
        if rng.random() < 0.2:
            ch = rng.choice(channels)
            slack(work_time(9, 18), 'user_channel_join', user, ip, entity={'type': 'channel', 'channel': {'id': 'C0' + h(ch)[:8].upper(), 'name': ch, 'privacy': 'public', 'is_shared': False, 'is_org_shared': False}})
    slack(at(13, 2, 11), 'public_channel_created', 'hana.sato', entity={'type': 'channel', 'channel': {'id': 'C07LAUNCH1', 'name': 'launch-q1', 'privacy': 'public', 'is_shared': False, 'is_org_shared': False}})
    slack(at(12, 20, 45), 'app_installed', 'hana.sato', entity={'type': 'app', 'app': {'id': 'A07GIPHY01', 'name': 'Giphy', 'is_distributed': True, 'is_directory_approved': True, 'is_workflow_app': False, 'scopes': ['commands', 'chat:write']}},
          details={'app_owner_id': 'U0' + h(EMAIL['hana.sato'])[:9].upper(), 'bot_scopes': ['commands', 'chat:write'], 'install_type': 'workspace'})


# ------------------------------------------------------------------------------------------------------------ m365 --
def m365(t, operation, user, workload='SharePoint', record_type=6, result='Succeeded', ip=None, **extra):
    email = EMAIL.get(user, user)
    ev = {'CreationTime': t.strftime('%Y-%m-%dT%H:%M:%S'), 'Id': h('m365', operation, t, email)[:8] + '-' + h(t)[:4] + '-4' + h(email)[:3] + '-9' + h(operation)[:3] + '-' + h(operation, t)[:12],
          'Operation': operation, 'OrganizationId': '7f3c2a10-4b5e-4d8a-9c61-2e0f1a3b5c7d', 'RecordType': record_type, 'ResultStatus': result,
          'UserKey': '1003200' + h(email)[:9].upper(), 'UserType': 0, 'Version': 1, 'Workload': workload, 'ClientIP': ip or OFFICE_IP, 'UserId': email}
    ev.update(extra)
    emit('m365', t, ev)


def m365_day():
    office_users = [n for n, r in PEOPLE if r in ('finance', 'sales', 'ceo', 'people')]
    for user in office_users:
        ip = OFFICE_IP if rng.random() < 0.6 else HOME_IP[user]
        t0 = work_time(7, 10)
        m365(t0, 'UserLoggedIn', user, 'AzureActiveDirectory', 15, 'Success', ip, ApplicationId='00000003-0000-0ff1-ce00-000000000000',
             ExtendedProperties=[{'Name': 'RequestType', 'Value': 'SAS:ProcessAuth'}, {'Name': 'UserAuthenticationMethod', 'Value': '1'}])
        for _ in range(rng.randint(8, 25)):
            op = rng.choices(['FileAccessed', 'FileModified', 'FileDownloaded', 'FilePreviewed'], [55, 25, 8, 12])[0]
            f = rng.choice(['Forecast FY27.xlsx', 'Invoices Nov.xlsx', 'Pipeline.xlsx', 'Contract template.docx', 'Payroll summary.xlsx'])
            m365(work_time(8, 19), op, user, 'SharePoint', 6, 'Succeeded', ip, ObjectId=f'https://acmecorp.sharepoint.com/sites/finance/Shared Documents/{f}',
                 SiteUrl='https://acmecorp.sharepoint.com/sites/finance/', SourceFileName=f, SourceFileExtension=f.rsplit('.', 1)[1], ItemType='File',
                 UserAgent='Microsoft Office Excel 2014')
        for _ in range(rng.randint(2, 6)):
            m365(work_time(8, 19), 'Send', user, 'Exchange', 2, 'Succeeded', ip, ClientInfoString='Client=OWA;Action=ViaProxy',
                 Item={'Subject': 'Re: ' + rng.choice(['invoice', 'renewal', 'meeting', 'contract']), 'SizeInBytes': rng.randint(2000, 90000)})
    # a mistyped password
    m365(at(8, 3, 40), 'UserLoginFailed', 'felix.braun', 'AzureActiveDirectory', 15, 'Success', HOME_IP['felix.braun'], LogonError='InvalidUserNameOrPassword', ErrorNumber='50126')


# ------------------------------------------------------------------------------------------------------------- aws --
def assumed(role, session):
    rid = 'AROA' + h(role)[:17].upper()
    return {'type': 'AssumedRole', 'principalId': f'{rid}:{session}', 'arn': f'arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}',
            'accountId': ACCOUNT, 'accessKeyId': 'ASIA' + h('k', role, session)[:16].upper(),
            'sessionContext': {'sessionIssuer': {'type': 'Role', 'principalId': rid, 'arn': f'arn:aws:iam::{ACCOUNT}:role/{role}', 'accountId': ACCOUNT, 'userName': role},
                               'webIdFederationData': {}, 'attributes': {'creationDate': '2026-11-24T00:00:00Z', 'mfaAuthenticated': 'false'}}}


def ct(t, name, source, identity, ip=None, request=None, response=None, ua='aws-cli/2.22.4 Python/3.12.6 Darwin/24.1.0 exe/x86_64', error=None, event_type='AwsApiCall', extra_data=None, read_only=None, region='eu-central-1'):
    ev = {'eventVersion': '1.10', 'userIdentity': identity, 'eventTime': t.strftime('%Y-%m-%dT%H:%M:%SZ'), 'eventSource': source, 'eventName': name,
          'awsRegion': region, 'sourceIPAddress': ip or OFFICE_IP, 'userAgent': ua, 'requestParameters': request, 'responseElements': response,
          'requestID': h('rq', name, t, rng.random())[:8] + '-' + h(t)[:4] + '-4' + h(name)[:3] + '-a' + h(source)[:3] + '-' + h(name, t)[:12],
          'eventID': h('ev', name, t, rng.random())[:8] + '-' + h(source)[:4] + '-4' + h(t)[:3] + '-b' + h(ip)[:3] + '-' + h(source, t)[:12],
          'readOnly': read_only if read_only is not None else name.startswith(('Get', 'List', 'Describe')), 'eventType': event_type, 'managementEvent': True,
          'recipientAccountId': ACCOUNT, 'eventCategory': 'Management', 'tlsDetails': {'tlsVersion': 'TLSv1.3', 'cipherSuite': 'TLS_AES_128_GCM_SHA256', 'clientProvidedHostHeader': source.replace('.amazonaws.com', '') + '.' + region + '.amazonaws.com'}}
    if error:
        ev['errorCode'], ev['errorMessage'] = error
    if extra_data is not None:
        ev['additionalEventData'] = extra_data
    emit('aws_cloudtrail', t, ev)


def aws_day():
    ci = assumed('github-actions-deploy', 'GitHubActions')
    gh_ip = '192.0.2.200'
    # deployments driven by CI: one per merged PR (about 30 a day)
    for _ in range(30):
        t = work_time(8, 20)
        ct(t, 'AssumeRoleWithWebIdentity', 'sts.amazonaws.com', {'type': 'WebIdentityUser', 'principalId': 'arn:aws:iam::' + ACCOUNT + ':oidc-provider/token.actions.githubusercontent.com:sts.amazonaws.com:repo:acme-corp/web-app:ref:refs/heads/main',
                                                                 'userName': 'repo:acme-corp/web-app:ref:refs/heads/main', 'identityProvider': 'arn:aws:iam::' + ACCOUNT + ':oidc-provider/token.actions.githubusercontent.com'},
           gh_ip, {'roleArn': f'arn:aws:iam::{ACCOUNT}:role/github-actions-deploy', 'roleSessionName': 'GitHubActions', 'durationSeconds': 3600},
           {'assumedRoleUser': {'assumedRoleId': 'AROA:GitHubActions', 'arn': ci['arn']}, 'provider': 'arn:aws:iam::' + ACCOUNT + ':oidc-provider/token.actions.githubusercontent.com', 'audience': 'sts.amazonaws.com'},
           ua='aws-sdk-js/2.1692.0', read_only=True)
        ct(t + dt.timedelta(seconds=3), 'GetCallerIdentity', 'sts.amazonaws.com', ci, gh_ip, None, None, 'aws-cli/2.22.4 md/command#sts.get-caller-identity')
        ct(t + dt.timedelta(seconds=8), 'GetAuthorizationToken', 'ecr.amazonaws.com', ci, gh_ip, None, None, 'aws-cli/2.22.4 md/command#ecr.get-login-password', read_only=True)
        for k in range(rng.randint(2, 4)):
            ct(t + dt.timedelta(seconds=40 + k), 'InitiateLayerUpload', 'ecr.amazonaws.com', ci, gh_ip, {'repositoryName': 'web-app', 'registryId': ACCOUNT}, {'uploadId': h(t, k)[:36], 'partSize': 20971520}, 'docker/27.3.1')
        ct(t + dt.timedelta(seconds=55), 'PutImage', 'ecr.amazonaws.com', ci, gh_ip, {'repositoryName': 'web-app', 'imageTag': h('tag', t)[:7], 'registryId': ACCOUNT}, None, 'docker/27.3.1')
        ct(t + dt.timedelta(seconds=70), 'UpdateService', 'ecs.amazonaws.com', ci, gh_ip, {'cluster': 'prod', 'service': 'web-app', 'forceNewDeployment': True}, None, 'aws-cli/2.22.4 md/command#ecs.update-service')
        for k in range(rng.randint(3, 8)):
            ct(t + dt.timedelta(seconds=90 + 15 * k), 'DescribeServices', 'ecs.amazonaws.com', ci, gh_ip, {'cluster': 'prod', 'services': ['web-app']}, None, 'aws-cli/2.22.4 md/command#ecs.wait')
    # platform engineers through IAM Identity Center (SAML federation, MFA enforced by Okta)
    for user in ('eva.lind', 'raj.patel', 'dana.kim'):
        ident = assumed('AWSReservedSSO_PlatformAdmin_4f1c2d3e', EMAIL[user])
        ip = OFFICE_IP if rng.random() < 0.6 else HOME_IP[user]
        t0 = work_time(8, 11)
        ct(t0, 'ConsoleLogin', 'signin.amazonaws.com', ident, ip, None, {'ConsoleLogin': 'Success'}, UA_CHROME, event_type='AwsConsoleSignIn', region='us-east-1',
           extra_data={'LoginTo': 'https://console.aws.amazon.com/console/home', 'MobileVersion': 'No', 'MFAUsed': 'No', 'SamlProviderArn': f'arn:aws:iam::{ACCOUNT}:saml-provider/AWSSSO_okta'})
        for _ in range(rng.randint(15, 40)):
            name, src, req = rng.choice([
                ('DescribeInstances', 'ec2.amazonaws.com', {'maxResults': 1000}), ('ListBuckets', 's3.amazonaws.com', {'Host': 's3.amazonaws.com'}),
                ('DescribeDBInstances', 'rds.amazonaws.com', {}), ('GetMetricData', 'monitoring.amazonaws.com', {'startTime': 'Nov 24, 2026'}),
                ('DescribeLogGroups', 'logs.amazonaws.com', {'limit': 50}), ('ListFunctions20150331', 'lambda.amazonaws.com', {}),
                ('DescribeClusters', 'ecs.amazonaws.com', {'clusters': ['prod']}), ('LookupEvents', 'cloudtrail.amazonaws.com', {'maxResults': 50})])
            ct(work_time(9, 18), name, src, ident, ip, req, None, 'AWS Internal', read_only=True)
    # the platform team rotates a service key the proper way (self-service, own user)
    svc = {'type': 'IAMUser', 'principalId': 'AIDA' + h('backup-agent')[:17].upper(), 'arn': f'arn:aws:iam::{ACCOUNT}:user/backup-agent', 'accountId': ACCOUNT,
           'accessKeyId': 'AKIA' + h('old', 'backup-agent')[:16].upper(), 'userName': 'backup-agent'}
    ct(at(16, 5, 12), 'CreateAccessKey', 'iam.amazonaws.com', svc, '192.0.2.201', {'userName': 'backup-agent'},
       {'accessKey': {'accessKeyId': 'AKIA' + h('new', 'backup-agent')[:16].upper(), 'status': 'Active', 'userName': 'backup-agent', 'createDate': 'Nov 24, 2026, 4:05:12 PM'}})
    ct(at(16, 9, 40), 'DeleteAccessKey', 'iam.amazonaws.com', svc, '192.0.2.201', {'userName': 'backup-agent', 'accessKeyId': svc['accessKeyId']}, None)


# ------------------------------------------------------------------------------------------------------- 1password --
def op_item(t, action, user, item, ip=None):
    email = EMAIL[user] if user in EMAIL else user
    emit('onepassword', t, {'uuid': h('opi', action, t, email, item)[:26].upper(), 'timestamp': t.strftime('%Y-%m-%dT%H:%M:%SZ'), 'used_version': rng.randint(1, 9),
                            'vault_uuid': h('vault', item[0])[:26].upper(), 'item_uuid': h('item', item)[:26].upper(),
                            'user': {'uuid': h('opu', email)[:26].upper(), 'name': user.replace('.', ' ').title(), 'email': email},
                            'client': {'app_name': '1Password Browser Extension', 'app_version': '81080028', 'platform_name': 'Chrome', 'platform_version': '131.0.0.0',
                                       'os_name': 'Windows' if ip == ATTACKER_IP else 'MacOSX', 'os_version': '10.0' if ip == ATTACKER_IP else '15.1', 'ip': ip or OFFICE_IP},
                            'action': action})


def op_signin(t, category, typ, user, ip=None):
    email = EMAIL[user]
    emit('onepassword', t, {'uuid': h('ops', t, email)[:26].upper(), 'session_uuid': h('opss', email, t.hour)[:26].upper(), 'timestamp': t.strftime('%Y-%m-%dT%H:%M:%SZ'),
                            'category': category, 'type': typ, 'country': 'NL' if ip == ATTACKER_IP else 'DE',
                            'target_user': {'uuid': h('opu', email)[:26].upper(), 'name': user.replace('.', ' ').title(), 'email': email},
                            'client': {'app_name': '1Password Browser Extension', 'app_version': '81080028', 'platform_name': 'Chrome', 'platform_version': '131.0.0.0',
                                       'os_name': 'Windows' if ip == ATTACKER_IP else 'MacOSX', 'os_version': '10.0' if ip == ATTACKER_IP else '15.1', 'ip': ip or OFFICE_IP}})


def op_day():
    for user, role in PEOPLE:
        ip = OFFICE_IP if rng.random() < 0.6 else HOME_IP[user]
        op_signin(work_time(7, 10), 'success', 'credentials_ok', user, ip)
        for _ in range(rng.randint(4, 14)):
            item = (role, rng.randint(0, 40))
            op_item(work_time(8, 19), rng.choices(['fill', 'reveal', 'secure-copy', 'enter-item-edit-mode'], [70, 12, 14, 4])[0], user, item, ip)


# ------------------------------------------------------------------------------------------------------ salesforce --
# Event Monitoring log rows (the EventLogFile CSVs, one object per row keyed by the CSV header, all values strings).
# A generator of its own, so adding Salesforce left every other source's events as they were.
sf_rng = random.Random(SEED + 1)
SF_ORG = '00D5g000004Qh0mEAC'
SF_USERS = [n for n, r in PEOPLE if r in ('sales', 'finance', 'ceo', 'marketing')] + [VICTIM]
REPORTS = {'00O5g000006xYzA': 'All Customers with ARR', '00O5g000006xZ1B': 'Pipeline by Account',
           '00O5g000006xZ2C': 'Contacts - Full Export', '00O5g000006xZ3D': 'Quarterly Bookings', '00O5g000006xZ4E': 'Open Cases by Region'}


def sf_row(t, event_type, user, ip, **extra):
    row = {'EVENT_TYPE': event_type, 'TIMESTAMP': t.strftime('%Y%m%d%H%M%S.') + f'{t.microsecond // 1000:03d}',
           'REQUEST_ID': '4' + h('sfreq', event_type, user, t)[:21], 'ORGANIZATION_ID': SF_ORG[:15],
           'USER_ID': '0055g' + h('sfu', user)[:10].upper(), 'USER_NAME': EMAIL[user], 'CLIENT_IP': ip,
           'TIMESTAMP_DERIVED': iso_ms(t), 'USER_ID_DERIVED': '0055g' + h('sfu', user)[:13].upper()}
    row.update(extra)
    emit('salesforce', t, row)


def sf_login(t, user, ip, status='LOGIN_NO_ERROR', ua=UA_CHROME):
    sf_row(t, 'Login', user, ip, LOGIN_STATUS=status, BROWSER_TYPE=ua, URI='/saml/SSO', API_TYPE='', TLS_PROTOCOL='TLSv1.3',
           CIPHER_SUITE='TLS_AES_256_GCM_SHA384', SOURCE_IP=ip,
           # The session key of the new session: a secret by its column name, masked before storage.
           SESSION_KEY=h('sfsession', user, t)[:16] if status == 'LOGIN_NO_ERROR' else '')


def sf_day():
    for user in SF_USERS:
        if user == VICTIM:
            continue
        ip = OFFICE_IP if sf_rng.random() < 0.7 else HOME_IP[user]
        t = DAY + dt.timedelta(seconds=sf_rng.randint(8 * 3600, 10 * 3600))
        if sf_rng.random() < 0.15:  # a mistyped password first
            sf_login(t - dt.timedelta(seconds=40), user, ip, 'LOGIN_ERROR_INVALID_PASSWORD')
        sf_login(t, user, ip)
        for _ in range(sf_rng.randint(2, 8)):
            report = sf_rng.choice(list(REPORTS))
            rt = DAY + dt.timedelta(seconds=sf_rng.randint(10 * 3600, 18 * 3600))
            sf_row(rt, 'Report', user, ip, REPORT_ID=report, URI='/' + report, REQUEST_STATUS='S', ROW_COUNT=str(sf_rng.randint(10, 900)))


def sf_attack():
    # 15:21 Salesforce through the hijacked SSO session: the customer base exported in three reports
    sf_login(at(15, 21, 4), VICTIM, ATTACKER_IP, ua=UA_ATTACK)
    for i, report in enumerate(['00O5g000006xYzA', '00O5g000006xZ1B', '00O5g000006xZ2C']):
        sf_row(at(15, 22, 10) + dt.timedelta(seconds=47 * i), 'ReportExport', VICTIM, ATTACKER_IP, REPORT_ID=report,
               URI='/' + report + '?export=1&enc=UTF-8&xf=csv', REQUEST_STATUS='S', ROW_COUNT=str(18000 + 2700 * i))


# ---------------------------------------------------------------------------------------------------- launchdarkly --
# Audit log entries (`GET /api/v2/auditlog` items, or the same objects as LaunchDarkly's webhooks post them).
# A generator of its own, so adding LaunchDarkly left every other source's events as they were.
ld_rng = random.Random(SEED + 2)
LD_ACCOUNT = '5f3c9e0a7b1d2c4e6f8a0b1c'
LD_FLAGS = ['new-checkout', 'payments-fraud-checks', 'dark-mode', 'search-v2', 'pricing-page-test', 'mobile-onboarding']
LD_ACTIONS = [('updateOn', 'turned the flag', 'Turned the flag on'), ('updateRules', 'updated the flag', 'Changed the targeting rules'),
              ('updateTargets', 'updated the flag', 'Added individual targets'), ('updateFallthrough', 'updated the flag', 'Changed the default rule')]


def ld_member(user):
    first, last = (p.capitalize() for p in user.split('.'))
    return {'_links': {'parent': {'href': '/api/v2/members', 'type': 'application/json'},
                       'self': {'href': f"/api/v2/members/{h('ldm', user)[:24]}", 'type': 'application/json'}},
            '_id': h('ldm', user)[:24], 'email': EMAIL[user], 'firstName': first, 'lastName': last}


def ld_entry(t, user, action, kind, name, resource, title_verb, description):
    entry_id = h('ldentry', action, name, t)[:24]
    emit('launchdarkly', t, {
        '_links': {'parent': {'href': '/api/v2/auditlog', 'type': 'application/json'},
                   'self': {'href': f'/api/v2/auditlog/{entry_id}', 'type': 'application/json'}},
        '_id': entry_id, '_accountId': LD_ACCOUNT, 'date': int(t.timestamp() * 1000),
        'accesses': [{'action': action, 'resource': resource}], 'kind': kind, 'name': name,
        'description': f'* {description}\n', 'shortDescription': '', 'comment': '', 'member': ld_member(user),
        'titleVerb': title_verb, 'title': f'[{EMAIL[user]}](mailto:{EMAIL[user]}) {title_verb} {name}',
        'target': {'name': name, 'resources': [resource]}})


def ld_day():
    # engineers change flags in staging and production through the day
    for _ in range(40):
        user = ld_rng.choice(ENGINEERS)
        flag = ld_rng.choice(LD_FLAGS)
        env = ld_rng.choice(['staging', 'staging', 'production'])
        action, verb, description = ld_rng.choice(LD_ACTIONS)
        t = DAY + dt.timedelta(seconds=ld_rng.randint(8 * 3600, 18 * 3600), milliseconds=ld_rng.randint(0, 999))
        ld_entry(t, user, action, 'flag', flag, f'proj/default:env/{env}:flag/{flag}', verb, description)


def ld_attack():
    # 15:26 LaunchDarkly through the hijacked SSO: an API token with the writer role, to keep changing flags later
    ld_entry(at(15, 26, 12), VICTIM, 'createAccessToken', 'token', 'ci-backup-sync', 'service-token/ci-backup-sync',
             'created the access token', 'Created the access token ci-backup-sync with the role writer')


# ----------------------------------------------------------------------------------------------------------- story --
def attack():
    """Account takeover of dana.kim (engineering lead, GitHub org owner, AWS platform admin)."""
    # 14:00-14:09 password spray: 34 accounts (the 25 real ones plus guessed role accounts), one try each
    targets = [n for n, _ in PEOPLE] + ['admin', 'it', 'hr', 'finance', 'test', 'support', 'security', 'devops', 'info']
    rng.shuffle(targets)
    targets.remove(VICTIM)
    targets.append(VICTIM)  # the spray's last try is the account it then brute-forces
    t = at(14, 0, 5)
    for i, user in enumerate(targets):
        alt = EMAIL.get(user, f'{user}@{DOMAIN}')
        okta(t + dt.timedelta(seconds=16 * i), 'user.session.start', alt, 'FAILURE', ATTACKER_IP,
             'INVALID_CREDENTIALS' if user in EMAIL else 'VERIFICATION_ERROR', ua=UA_ATTACK, display='User login to Okta')
    # 14:10-14:13 brute force on dana.kim: 9 more failures, then the right password
    for i in range(9):
        okta(at(14, 10, 2) + dt.timedelta(seconds=19 * i), 'user.session.start', VICTIM, 'FAILURE', ATTACKER_IP, 'INVALID_CREDENTIALS', ua=UA_ATTACK, display='User login to Okta')
    okta(at(14, 13, 31), 'user.session.start', VICTIM, 'SUCCESS', ATTACKER_IP, ua=UA_ATTACK, display='User login to Okta')
    # push bombing: two pushes rejected, the third accepted
    for k, (res, ev) in enumerate([('FAILURE', 'user.mfa.okta_verify.deny_push'), ('FAILURE', 'user.mfa.okta_verify.deny_push'), ('SUCCESS', 'user.authentication.auth_via_mfa')]):
        okta(at(14, 13, 40 + 45 * k), 'system.push.send_factor_verify_push', VICTIM, 'SUCCESS', ATTACKER_IP, ua=UA_ATTACK)
        okta(at(14, 13, 58 + 45 * k), ev, VICTIM, res, ATTACKER_IP, 'User rejected Okta push verify' if res == 'FAILURE' else None, ua=UA_ATTACK)
    # 14:18 the attacker swaps the victim's Okta Verify for their own device
    okta(at(14, 18, 12), 'user.mfa.factor.deactivate', VICTIM, 'SUCCESS', ATTACKER_IP, ua=UA_ATTACK, display='Reset factor for user',
         target=[okta_target(EMAIL[VICTIM]), okta_target('Okta Verify', 'AuthenticatorEnrollment')])
    okta(at(14, 19, 47), 'user.mfa.factor.activate', VICTIM, 'SUCCESS', ATTACKER_IP, ua=UA_ATTACK, display='Activate factor for user',
         target=[okta_target(EMAIL[VICTIM]), okta_target('Okta Verify', 'AuthenticatorEnrollment')])
    for app in ('Google Workspace', 'GitHub Enterprise Cloud', 'AWS IAM Identity Center', 'Slack', 'Microsoft Office 365', '1Password'):
        okta(at(14, 21, 0) + dt.timedelta(minutes=5 * OKTA_APPS.index(app)), 'user.authentication.sso', VICTIM, 'SUCCESS', ATTACKER_IP, ua=UA_ATTACK,
             display='User single sign on to app', target=[okta_target(app.lower().replace(' ', '_'), 'AppInstance', app)])

    # 14:24 Google Workspace: consent to a "backup" OAuth app with full mail + drive scopes
    gws(at(14, 24, 9), 'login', 'login_success', VICTIM, [('login_type', 'saml'), ('is_suspicious', False)], 'login', ATTACKER_IP)
    gws(at(14, 25, 30), 'token', 'authorize', VICTIM, [('client_id', '948210563321-q8rkd0.apps.googleusercontent.com'), ('app_name', 'Drive Backup Helper'), ('client_type', 'WEB'),
                                                       ('scope', ['https://mail.google.com/', 'https://www.googleapis.com/auth/drive', 'https://www.googleapis.com/auth/userinfo.email'])],
        'auth', ATTACKER_IP)
    # 14:27-14:34 bulk download of Drive through the app: 320 files
    for i in range(320):
        gws(at(14, 27, 0) + dt.timedelta(seconds=i * 1.3), 'drive', 'download', VICTIM,
            [('primary_event', True), ('billable', True), ('owner', EMAIL[PEOPLE[i % len(PEOPLE)][0]]), ('doc_id', '1' + h('stolen', i)[:32]),
             ('doc_type', ['document', 'spreadsheet', 'pdf'][i % 3]), ('doc_title', f'{DOC_TITLES[i % len(DOC_TITLES)]} ({i})'), ('visibility', 'shared_internally'),
             ('originating_app_id', '948210563321')], 'access', ATTACKER_IP)

    # 14:40 GitHub: an outside account becomes org owner, gets a deploy key and an exfiltration webhook
    github(at(14, 40, 3), 'org.add_member', GH_LOGIN[VICTIM], user='dk-backup-7', permission='admin', actor_ip=ATTACKER_IP)
    github(at(14, 43, 55), 'public_key.create', 'dk-backup-7', repo='acme-corp/payments-api', title='backup', read_only='false',
           fingerprint='SHA256:' + h('deploykey')[:43], actor_ip=ATTACKER_IP)
    github(at(14, 45, 20), 'hook.create', 'dk-backup-7', org=ORG, hook_id=4880017, name='webhook', events=['push', 'repository', 'member'], active=True, actor_ip=ATTACKER_IP,
           config={'url': 'https://collector.exfil.example/gh?token=ghp_R8fKc2LmQ9vX3tYw7ZpA1sD4gH6jN0bE5uVi', 'content_type': 'json', 'insecure_ssl': '1'})
    # then clones most of the organization's repositories with the new owner account
    all_repos = REPOS + ['acme-corp/' + r for r in ('billing-service', 'auth-gateway', 'admin-portal', 'ml-models', 'ios-app', 'android-app',
                                                     'docs', 'helm-charts', 'secrets-rotation', 'customer-exports', 'analytics')]
    for i, repo in enumerate(all_repos):
        github(at(14, 46, 2) + dt.timedelta(seconds=11 * i), 'git.clone', 'dk-backup-7', repo=repo, repository_public=False,
               transport_protocol_name='ssh', actor_ip=ATTACKER_IP)

    # 14:50 AWS: federated console session, backdoor IAM user with an access key and admin, CloudTrail stopped
    ident = assumed('AWSReservedSSO_PlatformAdmin_4f1c2d3e', EMAIL[VICTIM])
    ct(at(14, 50, 11), 'ConsoleLogin', 'signin.amazonaws.com', ident, ATTACKER_IP, None, {'ConsoleLogin': 'Success'}, UA_ATTACK, event_type='AwsConsoleSignIn', region='us-east-1',
       extra_data={'LoginTo': 'https://console.aws.amazon.com/console/home', 'MobileVersion': 'No', 'MFAUsed': 'No', 'SamlProviderArn': f'arn:aws:iam::{ACCOUNT}:saml-provider/AWSSSO_okta'})
    ct(at(14, 52, 40), 'CreateUser', 'iam.amazonaws.com', ident, ATTACKER_IP, {'userName': 'svc-backup-sync', 'path': '/'},
       {'user': {'path': '/', 'userName': 'svc-backup-sync', 'userId': 'AIDA' + h('svc-backup-sync')[:17].upper(), 'arn': f'arn:aws:iam::{ACCOUNT}:user/svc-backup-sync', 'createDate': 'Nov 24, 2026, 2:52:40 PM'}}, 'AWS Internal')
    ct(at(14, 53, 25), 'AttachUserPolicy', 'iam.amazonaws.com', ident, ATTACKER_IP, {'userName': 'svc-backup-sync', 'policyArn': 'arn:aws:iam::aws:policy/AdministratorAccess'}, None, 'AWS Internal')
    # the response is logged in full here (a misconfigured collector): the secret key shows the masking stage at work
    ct(at(14, 54, 2), 'CreateAccessKey', 'iam.amazonaws.com', ident, ATTACKER_IP, {'userName': 'svc-backup-sync'},
       {'accessKey': {'userName': 'svc-backup-sync', 'accessKeyId': 'AKIA5X7Q2RZK4M8N3PTW', 'status': 'Active',
                      'secretAccessKey': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8vLmT2aB', 'createDate': 'Nov 24, 2026, 2:54:02 PM'}}, 'AWS Internal')
    ct(at(14, 56, 49), 'StopLogging', 'cloudtrail.amazonaws.com', ident, ATTACKER_IP, {'name': f'arn:aws:cloudtrail:eu-central-1:{ACCOUNT}:trail/org-audit-trail'}, None, 'AWS Internal')

    # 15:02 Slack: a "workspace exporter" app with history/files scopes; its config payload carries credentials
    slack(at(15, 2, 14), 'user_login', VICTIM, ATTACKER_IP, ua=UA_ATTACK)
    slack(at(15, 3, 0), 'anomaly', VICTIM, ATTACKER_IP, ua=UA_ATTACK, details={'action_timestamp': int(at(15, 2, 14).timestamp()) * 1000000,
                                                                               'location': 'Amsterdam, NL', 'reason': ['unexpected_ip_address', 'unexpected_user_agent'],
                                                                               'previous_ip_address': HOME_IP[VICTIM], 'previous_ua': UA_CHROME})
    slack(at(15, 4, 31), 'app_installed', VICTIM, ATTACKER_IP, ua=UA_ATTACK,
          entity={'type': 'app', 'app': {'id': 'A07EXPRT9Q', 'name': 'Workspace Exporter', 'is_distributed': False, 'is_directory_approved': False, 'is_workflow_app': False,
                                         'scopes': ['channels:history', 'groups:history', 'files:read', 'users:read.email']}},
          details={'app_owner_id': 'U0' + h(EMAIL[VICTIM])[:9].upper(), 'bot_scopes': ['channels:history', 'groups:history', 'files:read'], 'install_type': 'workspace',
                   'app_config': {'export_endpoint': 'https://collector.exfil.example/slack', 'username': 'exporter', 'password': 'Expo7t!Winter2026',
                                  'bot_token': 'xoxb-7315940215-8120473371094-Qw8ErT5yUi2OpAs6DfGhJk1L'}})
    slack(at(15, 6, 10), 'app_scopes_expanded', VICTIM, ATTACKER_IP, ua=UA_ATTACK,
          entity={'type': 'app', 'app': {'id': 'A07EXPRT9Q', 'name': 'Workspace Exporter', 'is_distributed': False, 'is_directory_approved': False, 'is_workflow_app': False,
                                         'scopes': ['channels:history', 'groups:history', 'files:read', 'users:read.email', 'admin']}},
          details={'new_scopes': ['admin'], 'previous_scopes': ['channels:history', 'groups:history', 'files:read', 'users:read.email']})

    # 15:10 M365: forward the victim's mail outside
    m365(at(15, 10, 3), 'UserLoggedIn', VICTIM, 'AzureActiveDirectory', 15, 'Success', ATTACKER_IP, ApplicationId='00000002-0000-0ff1-ce00-000000000000')
    m365(at(15, 11, 45), 'New-InboxRule', VICTIM, 'Exchange', 1, 'True', ATTACKER_IP + ':53122', ObjectId=EMAIL[VICTIM] + '\\..',
         Parameters=[{'Name': 'Mailbox', 'Value': EMAIL[VICTIM]}, {'Name': 'Name', 'Value': '..'}, {'Name': 'ForwardTo', 'Value': 'dk.backup.7@proton.example'},
                     {'Name': 'MarkAsRead', 'Value': 'True'}, {'Name': 'StopProcessingRules', 'Value': 'True'}])

    # 15:15 1Password: the attacker harvests the engineering vault (36 distinct items in 4 minutes)
    op_signin(at(15, 14, 30), 'success', 'credentials_ok', VICTIM, ATTACKER_IP)
    for i in range(36):
        op_item(at(15, 15, 0) + dt.timedelta(seconds=7 * i), 'reveal' if i % 3 else 'secure-copy', VICTIM, ('eng-lead', 100 + i), ATTACKER_IP)


def main():
    okta_day()
    github_day()
    gws_day()
    slack_day()
    m365_day()
    aws_day()
    op_day()
    attack()
    sf_day()
    sf_attack()
    ld_day()
    ld_attack()
    OUT.sort(key=lambda x: (x[0], x[1]))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'events.jsonl')
    with open(path, 'w') as f:
        for _, _, source, event in OUT:
            f.write(json.dumps({'source': source, 'event': event}, separators=(',', ':')) + '\n')
    counts = {}
    for _, _, s, _ in OUT:
        counts[s] = counts.get(s, 0) + 1
    print(f'wrote {len(OUT)} events to {path}: ' + ', '.join(f'{k}={v}' for k, v in sorted(counts.items())))


if __name__ == '__main__':
    main()
