/** How imaging values show on screen: DICOM dates, status tags, sizes. */
import type { FileStatus, ReportStatus } from '@/api/imaging'

type TagType = 'primary' | 'success' | 'warning' | 'danger' | 'info'

/** DICOM DA (20261120) as 2026-11-20; anything else as it is. */
export function dicomDate(da: string | null | undefined): string {
  if (!da) return ''
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(da)
  return m ? `${m[1]}-${m[2]}-${m[3]}` : da
}

/** DICOM TM (093000) as 09:30. */
export function dicomTime(tm: string | null | undefined): string {
  if (!tm || tm.length < 4) return ''
  return `${tm.slice(0, 2)}:${tm.slice(2, 4)}`
}

export const REPORT_TAG: Record<ReportStatus, TagType> = { preliminary: 'warning', final: 'success', amended: 'primary' }

export const FILE_TAG: Record<FileStatus, TagType> = {
  pending: 'info',
  indexed: 'success',
  duplicate: 'primary',
  rejected: 'danger',
  failed: 'warning',
}

/** Still to be settled by the ingest (a failed file is retried with back-off). */
export const UNSETTLED: FileStatus[] = ['pending', 'failed']

export function fileSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}
